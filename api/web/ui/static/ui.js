// orderly web UI: the few things a server-rendered page cannot do by
// itself. Output is only ever inserted as text (textContent), never HTML.
"use strict";
(function () {
  const csrf = document.body.dataset.csrf || "";

  // Chromium restores even a no-store page from its back-forward cache,
  // as it was left: a form already confirmed, holding the idempotency
  // key its run used, so pressing the button again would run nothing
  // without asking and show the earlier run. Such a page is loaded
  // afresh, as no-store means.
  window.addEventListener("pageshow", function (e) {
    if (e.persisted) window.location.reload();
  });

  // htmx requests carry the session's anti-forgery token as a header.
  document.body.addEventListener("htmx:configRequest", function (e) {
    if (csrf) e.detail.headers["X-CSRF-Token"] = csrf;
  });

  // A refused htmx request (a filter the API rejects, a refresh after the
  // session ended) is said, not silently left out: htmx swaps only 2xx
  // answers, so the page would go on showing what it had.
  function refusal(msg) {
    let el = document.getElementById("error");
    if (!el) {
      el = document.createElement("p");
      el.id = "error";
      el.className = "error";
      el.setAttribute("role", "alert");
      const main = document.getElementById("main");
      if (main) main.prepend(el);
    }
    el.textContent = msg;
  }
  document.body.addEventListener("htmx:responseError", function (e) {
    const xhr = e.detail.xhr;
    if (xhr.status === 401) {
      window.location.assign("/ui/signin?next=" + encodeURIComponent(location.pathname + location.search));
      return;
    }
    let msg = "Refused (" + xhr.status + ").";
    // An error page says it in #problem, a page refused in part in #error.
    const doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
    const problem = doc.getElementById("problem") || doc.getElementById("error");
    if (problem && problem.textContent) msg = problem.textContent;
    refusal(msg);
  });
  document.body.addEventListener("htmx:sendError", function () {
    refusal("The server cannot be reached; what the page shows may be out of date.");
  });
  document.body.addEventListener("htmx:afterSwap", function () {
    const el = document.getElementById("error");
    if (el && el.dataset.fromServer !== "yes") el.remove();
  });

  // A value its pattern refuses is refused by the browser before the
  // form is sent, in its own words, which say nothing of what the field
  // takes ("Please match the requested format."): the field's data-rule
  // says it instead, as the API's refusal would. Any edit clears it, so
  // the browser judges the new value afresh.
  document.addEventListener("invalid", function (e) {
    const f = e.target;
    if (f.dataset && f.dataset.rule && f.validity.patternMismatch) f.setCustomValidity(f.dataset.rule);
  }, true);
  document.addEventListener("input", function (e) {
    const f = e.target;
    if (f.dataset && f.dataset.rule) f.setCustomValidity("");
  }, true);

  // confirmValues lists in the confirmation what the form will run
  // with: its host and each field as the person sees it ("Restart an
  // instance?" alone does not say which one, nor where). A secret is
  // not shown, a field left empty says it takes the default or is
  // empty, and a bidi control is shown as its escape, as everywhere
  // else on the page.
  function confirmValues(form) {
    const list = document.getElementById("confirm-values");
    if (!list) return;
    list.textContent = "";
    const escaped = function (s) {
      return s.replace(/[\u202a-\u202e\u2066-\u2069]/g, function (c) { return "\\u" + c.charCodeAt(0).toString(16); });
    };
    Array.prototype.forEach.call(form.elements, function (f) {
      if (!f.id || f.type === "hidden" || f.type === "submit" || f.disabled) return;
      const label = form.querySelector('label[for="' + CSS.escape(f.id) + '"]');
      if (!label) return;
      const name = label.cloneNode(true);
      name.querySelectorAll(".help").forEach(function (h) { h.remove(); });
      let value;
      if (f.dataset.secret !== undefined) value = f.type !== "checkbox" && f.value === "" ? "(default)" : "(secret, not shown)";
      else if (f.type === "checkbox") value = f.checked ? "yes" : "no";
      else if (f.tagName === "SELECT") value = f.selectedOptions.length ? f.selectedOptions[0].textContent : "";
      else value = f.value === "" ? (f.placeholder || "(empty)") : f.value;
      const row = document.createElement("div");
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = name.textContent.trim().replace(/ \(secret, asked every run\)$/, "");
      dd.textContent = escaped(value);
      row.append(dt, dd);
      list.appendChild(row);
    });
    list.hidden = list.childElementCount === 0;
  }

  // Forms with data-confirm ask first, in a keyboard-usable <dialog>.
  const dialog = document.getElementById("confirm");
  document.addEventListener("submit", function (e) {
    const form = e.target;
    if (!form.dataset || !form.dataset.confirm || form.dataset.confirmed === "yes" || !dialog) return;
    e.preventDefault();
    document.getElementById("confirm-text").textContent = form.dataset.confirm;
    confirmValues(form);
    dialog.returnValue = "";
    dialog.onclose = function () {
      if (dialog.returnValue === "ok") {
        form.dataset.confirmed = "yes";
        // The server asks for it too (without JavaScript it is the
        // form's checkbox).
        const yes = document.createElement("input");
        yes.type = "hidden";
        yes.name = "confirmed";
        yes.value = "yes";
        form.appendChild(yes);
        form.requestSubmit(e.submitter || undefined);
      }
    };
    dialog.showModal();
    document.getElementById("confirm-yes").focus();
  }, true);

  // ANSI SGR colours as classes on spans; the text itself is textContent.
  function sgr(classes, params) {
    if (params === "") return [];
    const ps = params.split(";");
    const drop = function (p) { classes = classes.filter(function (c) { return c.indexOf(p) !== 0; }); };
    for (let i = 0; i < ps.length; i++) {
      const n = parseInt(ps[i], 10);
      if (isNaN(n)) continue;
      if (n === 0) classes = [];
      else if (n === 1) { drop("ansi-bold"); classes.push("ansi-bold"); }
      else if (n === 3) { drop("ansi-italic"); classes.push("ansi-italic"); }
      else if (n === 4) { drop("ansi-underline"); classes.push("ansi-underline"); }
      else if (n === 22) drop("ansi-bold");
      else if (n === 23) drop("ansi-italic");
      else if (n === 24) drop("ansi-underline");
      else if (n >= 30 && n <= 37) { drop("ansi-fg"); classes.push("ansi-fg" + (n - 30)); }
      else if (n >= 90 && n <= 97) { drop("ansi-fg"); classes.push("ansi-fg" + (n - 82)); }
      else if (n === 39) drop("ansi-fg");
      else if (n >= 40 && n <= 47) { drop("ansi-bg"); classes.push("ansi-bg" + (n - 40)); }
      else if (n >= 100 && n <= 107) { drop("ansi-bg"); classes.push("ansi-bg" + (n - 92)); }
      else if (n === 49) drop("ansi-bg");
      else if (n === 38 || n === 48) i += ps[i + 1] === "5" ? 2 : ps[i + 1] === "2" ? 4 : 0;
    }
    return classes;
  }

  // A page that could not be shown for the database out of reach (a 503
  // with data-retry) asks for itself again at that pace, as an automatic
  // refresh, and shows itself once the answer is another: the page it
  // stands for, or what refuses it (a session that ended meanwhile).
  const errorPage = document.getElementById("error-page");
  if (errorPage && errorPage.dataset.retry) {
    const every = parseInt(errorPage.dataset.retry, 10);
    const again = function () {
      fetch(location.pathname + location.search, { cache: "no-store", headers: { "HX-Request": "true", "X-Orderly-Refresh": "auto" } })
        .then(function (resp) {
          if (resp.status === 503) setTimeout(again, every);
          else window.location.reload();
        })
        .catch(function () { setTimeout(again, every); });
    };
    setTimeout(again, every);
  }

  const run = document.getElementById("run");
  if (!run || !run.dataset.events) return;
  const out = document.getElementById("output");
  const statusEl = document.getElementById("status");
  const note = document.getElementById("output-note");
  const hostNote = document.getElementById("host-note");
  // The page keeps the first and the last KEEP characters of a huge
  // output; the whole of what was kept is downloadable when it ends.
  const KEEP = 32 * 1024;
  let headLen = 0, tail = null, tailLen = 0;
  const state = { stdout: [], stderr: [] };

  // An escape sequence cut between two chunks (the worker sends what
  // each read of the pipe got) is held back until the next chunk
  // completes it: shown at once, its halves were text ("32m").
  const cutEscape = /\x1b(?:\[[\x30-\x3f]*[\x20-\x2f]*|[\]PX^_][^\x07\x1b]*|[\x20-\x2f]*)?$/;
  const held = { stdout: "", stderr: "" };

  // Output is put on the page in batches, at most every FLUSH ms, not
  // chunk by chunk: each addition to the <pre> lays all of its text out
  // again (and reading the scroll position made the browser do so at
  // once), so a command writing a megabyte in 32 KiB chunks kept a slow
  // machine's tab busy for minutes, its Stop button unanswered. A burst
  // is one addition, and only the head and tail the page keeps of it.
  const FLUSH = 100;
  // What waits for the next flush is rendered already, off the page,
  // where it costs no layout: what goes to the head and the last KEEP
  // characters for the tail, so it stays bounded when timers are late
  // (a busy or a background tab).
  let pendHead = document.createDocumentFragment(), pendHeadLen = 0;
  let pendTail = null, pendTailLen = 0, flushTimer = 0;
  function append(stream, text) {
    const frag = document.createDocumentFragment();
    render(stream, text, frag);
    let len = frag.textContent.length;
    if (tail === null && pendTail === null) {
      const room = KEEP - headLen - pendHeadLen;
      if (len <= room) {
        pendHead.appendChild(frag);
        pendHeadLen += len;
        len = 0;
      } else {
        // The head takes what it still holds; the rest starts the tail.
        const head = frag.cloneNode(true);
        trim(head, len - room, true);
        trim(frag, room, false);
        pendHead.appendChild(head);
        pendHeadLen = KEEP - headLen;
        pendTail = document.createDocumentFragment();
        len = frag.textContent.length;
      }
    }
    if (len > 0) {
      if (pendTail === null) pendTail = document.createDocumentFragment();
      pendTail.appendChild(frag);
      pendTailLen += len;
      if (pendTailLen > KEEP) {
        trim(pendTail, pendTailLen - KEEP, false);
        pendTailLen = pendTail.textContent.length;
      }
    }
    if (!flushTimer) flushTimer = setTimeout(flush, FLUSH);
  }
  function dropPending() {
    clearTimeout(flushTimer);
    flushTimer = 0;
    pendHead = document.createDocumentFragment();
    pendHeadLen = 0;
    pendTail = null;
    pendTailLen = 0;
  }

  // trim removes n characters from the start of el's text, or from its
  // end; a control's escape (\u202e) goes whole, never in part.
  function trim(el, n, fromEnd) {
    while (n > 0) {
      const c = fromEnd ? el.lastChild : el.firstChild;
      if (!c) return;
      const len = c.textContent.length;
      if (len <= n || (c.nodeType === 1 && c.classList.contains("ctl"))) {
        el.removeChild(c);
        n -= len;
      } else if (c.nodeType === 3) {
        // Never half of a surrogate pair.
        let k = fromEnd ? len - n : n;
        const low = c.data.charCodeAt(k);
        if (low >= 0xdc00 && low <= 0xdfff) k += fromEnd ? -1 : 1;
        c.data = fromEnd ? c.data.slice(0, k) : c.data.slice(k);
        n = 0;
      } else {
        trim(c, n, fromEnd);
        n = 0;
      }
    }
  }

  // render turns a stream's text into spans on frag.
  function render(stream, text, frag) {
    text = held[stream] + text;
    const cut = cutEscape.exec(text);
    held[stream] = cut && text.length - cut.index <= 4096 ? cut[0] : "";
    if (held[stream]) text = text.slice(0, cut.index);
    // Drop the sequences that are not colour, as the server's rendering
    // does: strings (OSC titles and links, DCS, SOS, PM, APC) up to their
    // terminator, and two-byte escapes (ESC ( B, ESC c, ...).
    text = text.replace(/\x1b[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?/g, "")
      .replace(/\x1b(?!\[)[\x20-\x2f]*[\x30-\x7e]/g, "");
    const parts = text.split("\x1b[");
    let classes = state[stream];
    parts.forEach(function (part, i) {
      if (i > 0) {
        // Parameters are 0x30-0x3f, private ones (ESC [ ? 25 l) too.
        const m = /^([\x30-\x3f]*)([\x20-\x2f]*)([\x40-\x7e])/.exec(part);
        if (m) {
          if (m[3] === "m") classes = sgr(classes.slice(), m[1]);
          part = part.slice(m[0].length);
        }
      }
      if (part === "") return;
      const span = document.createElement("span");
      span.className = stream + (classes.length ? " " + classes.join(" ") : "");
      // A bidi control (embedding, override, isolate) would reorder what
      // follows it: shown as its escape, as the server renders it.
      part.replace(/\x1b/g, "").split(/([\u202a-\u202e\u2066-\u2069])/).forEach(function (s, k) {
        if (k % 2 === 0) {
          if (s !== "") span.appendChild(document.createTextNode(s));
          return;
        }
        const ctl = document.createElement("span");
        ctl.className = "ctl";
        ctl.textContent = "\\u" + s.charCodeAt(0).toString(16);
        span.appendChild(ctl);
      });
      frag.appendChild(span);
    });
    state[stream] = classes;
  }

  function flush() {
    const head = pendHead, headAdds = pendHeadLen, more = pendTail, moreLen = pendTailLen;
    dropPending();
    const atBottom = out.scrollTop + out.clientHeight >= out.scrollHeight - 24;
    if (headAdds > 0) {
      out.appendChild(head);
      headLen += headAdds;
    }
    if (more !== null) {
      if (tail === null) {
        const marker = document.createElement("span");
        marker.className = "omitted";
        marker.textContent = "\n… the middle of the output is not shown here; download it when the order ends …\n";
        out.appendChild(marker);
        tail = document.createElement("span");
        out.appendChild(tail);
      }
      tail.appendChild(more);
      tailLen += moreLen;
      if (tailLen > KEEP) {
        trim(tail, tailLen - KEEP, false);
        tailLen = tail.textContent.length;
      }
    }
    if (atBottom) out.scrollTop = out.scrollHeight;
  }

  // utf8Scan finds where bytes stop being UTF-8 as Go reads it
  // (utf8.Valid: no overlong forms, surrogates or values past U+10FFFF):
  // {bad: true, at} at the first byte of a sequence that is not, or
  // {bad: false, at} where a sequence the bytes leave unfinished begins
  // (bytes.length when none does).
  function utf8Scan(b) {
    let i = 0;
    while (i < b.length) {
      const c = b[i];
      let n = 0;
      if (c < 0x80) { i++; continue; }
      if (c >= 0xc2 && c <= 0xdf) n = 1;
      else if (c >= 0xe0 && c <= 0xef) n = 2;
      else if (c >= 0xf0 && c <= 0xf4) n = 3;
      else return { bad: true, at: i };
      let lo = 0x80, hi = 0xbf; // the second byte's range
      if (c === 0xe0) lo = 0xa0; else if (c === 0xed) hi = 0x9f; else if (c === 0xf0) lo = 0x90; else if (c === 0xf4) hi = 0x8f;
      for (let k = 1; k <= n; k++) {
        if (i + k >= b.length) return { bad: false, at: i };
        const d = b[i + k];
        if (d < (k === 1 ? lo : 0x80) || d > (k === 1 ? hi : 0xbf)) return { bad: true, at: i };
      }
      i += n + 1;
    }
    return { bad: false, at: b.length };
  }

  // A character whose bytes arrive in two chunks (each then base64, being
  // invalid UTF-8 alone) is completed by the next one: the bytes it
  // leaves unfinished are carried over, per stream. A stream with bytes
  // that are not UTF-8 is binary: its stored output is a download only,
  // as the finished page says, and shown as text live it was a run of
  // replacement characters. What it printed before them is shown; the
  // page then says, once, that the stream is binary and shows nothing
  // more of it.
  const utf8 = new TextDecoder("utf-8");
  const carry = { stdout: new Uint8Array(0), stderr: new Uint8Array(0) };
  const binary = { stdout: false, stderr: false };
  // textOf is the text of a stream's next bytes (more: whether more may
  // follow, which an unfinished character waits for), or null when the
  // stream is binary.
  function textOf(stream, bytes, more) {
    if (binary[stream]) return null;
    let b = bytes;
    if (carry[stream].length > 0) {
      b = new Uint8Array(carry[stream].length + bytes.length);
      b.set(carry[stream]);
      b.set(bytes, carry[stream].length);
    }
    const scan = utf8Scan(b);
    const text = utf8.decode(b.subarray(0, scan.at));
    if (!scan.bad && (more || scan.at === b.length)) {
      carry[stream] = b.slice(scan.at);
      return text;
    }
    binary[stream] = true;
    carry[stream] = new Uint8Array(0);
    if (text !== "") append(stream, text);
    flush();
    const marker = document.createElement("span");
    marker.className = "omitted binary";
    marker.textContent = "\n… " + stream + " is binary from here: download it when the order ends …\n";
    out.appendChild(marker);
    return null;
  }

  // bytesOf is a chunk's bytes, or null for an encoding the page does not
  // read.
  const encoder = new TextEncoder();
  function bytesOf(chunk) {
    if (!chunk.encode) return encoder.encode(chunk.data);
    if (chunk.encode !== "base64") return null;
    const bin = atob(chunk.data);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes;
  }

  function decode(stream, chunk) {
    if (!chunk.encode) { // what was pending was not a character
      const pending = textOf(stream, new Uint8Array(0), false);
      return pending === null ? null : pending + chunk.data;
    }
    const bytes = bytesOf(chunk);
    if (bytes) return textOf(stream, bytes, true);
    const pending = textOf(stream, new Uint8Array(0), false);
    return pending === null ? null : pending + "[" + chunk.encode + " output: download it when the order ends]\n";
  }

  // Each chunk says where in its stream it starts (its offset, in bytes):
  // the page shows only what continues what it showed, as the Go
  // client's follow does. A repeat (a stream replayed) is dropped, or the
  // part of it already shown; a chunk past a hole (the message bus
  // restarted and lost chunks) is not shown: the page says so where the
  // hole is. Shown joined up, the output would read as if nothing were
  // missing. Placing goes on: once the bus is back the worker publishes
  // a running order's chunks again from offset 0, which fill the hole
  // (the note then goes); what none fills, the stored output shown,
  // whole, when the order ends has.
  // A hole is its stream's: a chunk of the other stream that continues
  // what the page shows of it fills nothing, and took the marker and the
  // note away while the hole was still there.
  const shown = { stdout: 0, stderr: 0 };
  const holes = { stdout: false, stderr: false };
  let interrupted = false; // a hole in either stream: the marker is shown
  const interruptedNote = "Live output was interrupted (the message bus lost some of it): the whole output is shown when the order ends.";
  function placed(stream, chunk) {
    const bytes = typeof chunk.offset === "number" ? bytesOf(chunk) : null;
    if (bytes === null) return interrupted ? null : decode(stream, chunk); // a worker older than offsets
    const at = shown[stream];
    if (chunk.offset > at) {
      holes[stream] = true;
      interrupt();
      return null;
    }
    if (chunk.offset + bytes.length <= at) return null;
    if (holes[stream]) {
      holes[stream] = false;
      if (!holes.stdout && !holes.stderr) resume();
    }
    shown[stream] = chunk.offset + bytes.length;
    return textOf(stream, bytes.subarray(at - chunk.offset), true);
  }
  // interrupt shows what the page has, then where live output stopped.
  function interrupt() {
    if (interrupted) return;
    interrupted = true;
    flush();
    const marker = document.createElement("span");
    marker.className = "omitted interrupted";
    marker.id = "interrupted";
    marker.textContent = "\n… live output was interrupted here: the message bus lost some of it; the whole output is shown when the order ends …\n";
    out.appendChild(marker);
    note.textContent = interruptedNote;
  }
  // resume takes the marker away once chunks continue what the page
  // shows of each stream: the holes were filled (the chunks published
  // again), and the output goes on where it stood.
  function resume() {
    interrupted = false;
    const marker = document.getElementById("interrupted");
    if (marker) marker.remove();
    if (note.textContent === interruptedNote) note.textContent = "";
  }

  // The session ended (signed out, expired): retrying would only reach
  // the sign-in page.
  function sessionEnded() {
    note.textContent = "Your session has ended: live output stopped. ";
    const a = document.createElement("a");
    a.href = "/ui/signin?next=" + encodeURIComponent(location.pathname);
    a.textContent = "Sign in again";
    note.appendChild(a);
  }

  // resync asks the server for the order as it is now, the run page
  // itself (an automatic refresh: it does not keep the session from
  // going idle), and shows its status; an order that ended meanwhile
  // is shown ended, its page loaded afresh. It answers "finished",
  // "live", "ended" (the session) or "unknown" (no answer).
  function resync() {
    return fetch(location.pathname, { cache: "no-store", headers: { "HX-Request": "true", "X-Orderly-Refresh": "auto" } })
      .then(function (resp) {
        if (resp.status === 401) return "ended";
        if (!resp.ok) return "unknown";
        return resp.text().then(function (html) {
          const doc = new DOMParser().parseFromString(html, "text/html");
          const r = doc.getElementById("run"), st = doc.getElementById("status");
          if (!r || !st || r.dataset.order !== run.dataset.order) return "unknown";
          statusEl.textContent = st.textContent;
          statusEl.className = st.className;
          const hn = doc.getElementById("host-note");
          if (hn) {
            hostNote.textContent = hn.textContent;
            hostNote.hidden = hn.hidden;
          }
          if (!r.dataset.events) {
            // Ended: the server renders its stored output, exit code,
            // duration and download links.
            window.location.reload();
            return "finished";
          }
          return "live";
        });
      })
      .catch(function () { return "unknown"; });
  }

  // lastId is the id of the last event the page showed ("" before the
  // first): a stream opened again resumes after it.
  let es = null, retryIn = 2000, lastId = "";
  // clearOutput empties the output shown and what the page kept of it.
  function clearOutput() {
    out.textContent = "";
    dropPending();
    headLen = 0; tail = null; tailLen = 0;
    shown.stdout = 0; shown.stderr = 0; interrupted = false;
    holes.stdout = false; holes.stderr = false;
    state.stdout = []; state.stderr = [];
    held.stdout = ""; held.stderr = "";
    carry.stdout = new Uint8Array(0); carry.stderr = new Uint8Array(0);
    binary.stdout = false; binary.stderr = false;
  }
  // follow opens the order's event stream: from its start, the page's
  // output rebuilt from it; or, resuming, after the last event the page
  // showed (?after=, which the server hands on as Last-Event-ID: a new
  // EventSource cannot send that header), the output kept as it is.
  function follow(resume) {
    let url = run.dataset.events;
    if (resume && lastId !== "") {
      url += "?after=" + encodeURIComponent(lastId);
    } else {
      clearOutput();
      lastId = "";
    }
    let opened = false;
    es = new EventSource(url);
    es.onopen = function () {
      // The browser reconnects by itself (resuming after the last event
      // it got): what happened meanwhile is asked for, not assumed.
      if (opened) resync();
      opened = true;
      retryIn = 2000;
      note.textContent = interrupted ? interruptedNote : "";
    };
    es.addEventListener("queued", function (e) {
      if (e.lastEventId) lastId = e.lastEventId;
      // Handed back before its command started (its worker stopped
      // while the order waited to start): queued again, as PostgreSQL
      // holds it, until a worker starts it (another started). Said at
      // once: the page's check comes only every CHECK ms.
      if (JSON.parse(e.data).handed_back) {
        statusEl.textContent = "queued";
        statusEl.className = "badge queued";
      }
    });
    es.addEventListener("started", function (e) {
      if (e.lastEventId) lastId = e.lastEventId;
      // Started after output of it was shown: it runs again (an
      // idempotent order requeued after its worker stopped), its output
      // from offset 0 again, which would read as repeats of what the
      // page showed. The new run's output is shown from its start.
      if (out.textContent !== "" || shown.stdout > 0 || shown.stderr > 0) {
        clearOutput();
        note.textContent = "The order runs again (its worker stopped and the order is idempotent): its output starts over.";
      }
      // A worker of the host took it: what the page said of the host
      // being offline no longer holds.
      hostNote.hidden = true;
      // A systemd verb's job, once started, is systemd's: a cancel does
      // not stop it, so Stop goes and the page says why.
      const jobNote = document.getElementById("job-note"), stopForm = document.getElementById("stop-form");
      if (jobNote) {
        jobNote.hidden = false;
        if (stopForm) stopForm.remove();
      }
      statusEl.textContent = "running";
      statusEl.className = "badge running";
    });
    ["stdout", "stderr"].forEach(function (name) {
      es.addEventListener(name, function (e) {
        const text = placed(name, JSON.parse(e.data));
        if (text !== null) append(name, text);
        if (e.lastEventId) lastId = e.lastEventId;
      });
    });
    // The server's live stream was lost and made again (a NATS restart).
    // Its id (0) is where the new stream's ids start. Nothing is said:
    // the worker publishes the running order's chunks again from offset
    // 0, placed as any other (repeats dropped); only a chunk past what
    // the page shows is a hole, and the order's end shows its stored
    // output, whole, whatever came live.
    es.addEventListener("interrupted", function (e) {
      if (e.lastEventId) lastId = e.lastEventId;
    });
    es.addEventListener("finished", function (e) {
      es.close();
      const o = JSON.parse(e.data);
      statusEl.textContent = o.status;
      statusEl.className = "badge " + o.status;
      // The server renders the finished order: its stored output, exit
      // code, duration and download links.
      window.location.reload();
    });
    // The session ended: the stream says so and ends.
    es.addEventListener("session-ended", function () {
      es.close();
      sessionEnded();
    });
    es.onerror = function () {
      if (es.readyState !== EventSource.CLOSED) return; // the browser retries
      // A reconnect was refused (a stream limit, a proxy, a replica
      // without this session): the badge would go on saying "running"
      // for an order that may have ended. Ask, and follow again later.
      lost();
    };
  }
  function lost() {
    resync().then(function (now) {
      if (now === "finished") return;
      if (now === "ended") { sessionEnded(); return; }
      note.textContent = now === "live" ? "Live output interrupted; following again…" :
        "Live output stopped: the server cannot be reached; trying again…";
      setTimeout(now === "live" ? function () { follow(true); } : lost, retryIn);
      retryIn = Math.min(retryIn * 2, 60000);
    });
  }
  // A worker killed while it runs the order sends nothing more: the
  // stream stays open, and the page went on saying "running" without a
  // word. While it follows, the page asks every CHECK ms for the order
  // as it is (an automatic refresh), which says when the host's worker
  // is offline, and shows an end the stream did not bring.
  const CHECK = 5000;
  setInterval(function () {
    if (es && es.readyState === EventSource.OPEN) resync();
  }, CHECK);
  follow(false);
})();
