package compat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/pyrepr"
	"github.com/orderly-run/orderly/internal/runbook"
)

// execute is POST /api/runbooks/<f>/execute: the run as stage0's
// Server-Sent Events, one event per output line, then "done". 404 and 403
// (claims) are JSON before any stream; recursion, validation and input
// failures are reported inside a 200 stream, as stage0 did.
func (s *Stage0) execute(q *stage0Request, file string) {
	rb, _, ok := s.load(q, file, stage0Fail)
	if !ok {
		return
	}
	body, status, err := readBody(q.r, q.cfg.HTTP.MaxBodyBytes)
	if err != nil {
		stage0Fail(q.w, status, err.Error())
		return
	}
	env, envErr := runbook.Sanitize(body.EnvVars)
	if envErr != nil {
		// stage0 validated the runbook with the variables as sent and met
		// the bad name only when it set them: validation sees the others.
		env = wellNamed(body.EnvVars)
		envErr = fmt.Errorf("ERROR: %w", envErr)
	}
	sc := q.cfg.Compat.Stage0
	scheme := "http"
	if q.r.TLS != nil {
		scheme = "https"
	}
	// The run's event stream follows the order: held before it is
	// recorded, as a native stream or wait is.
	release, err := s.Runbooks.HoldStream(q.p.Name)
	if err != nil {
		code, msg := statusFor(q.r, err)
		q.w.Header().Set("Retry-After", "1")
		stage0Fail(q.w, code, msg)
		return
	}
	defer release()
	// A JWT that stops being accepted (past its exp, its secret changed
	// by a reload) ends the stream as it ends a native wait
	// (api.WithCredentialCheck). A runbook's delegated token is not
	// checked again, as natively: its run's end is what revokes it, and
	// its look-up is a PostgreSQL read, which a restart would fail.
	var revoked string
	ctx := api.WithCredentialCheck(q.r.Context(), func() bool {
		if q.chain.Delegated {
			return false
		}
		again, status, msg := s.authenticate(q.r, s.Config())
		switch {
		case status != 0:
			revoked = msg
		case again.p.Name != q.p.Name:
			revoked = "Invalid token: the token names another user"
		}
		return revoked != ""
	})
	o, err := s.Runbooks.RunRunbook(ctx, q.p, api.RunbookRun{File: rb.File, Env: env, Hosts: sc.Hosts, Chain: q.chain,
		BaseURL: scheme + "://" + q.r.Host, Path: strings.TrimSuffix(sc.Prefix, "/") + "/runbooks", Source: "stage0",
		EnvError: envErr, ServiceEnv: s.getenv, Waiter: true})
	if err != nil {
		switch reasonOf(err) {
		case "runbook_claims":
			stage0Fail(q.w, http.StatusForbidden, asOrderError(err).Message)
		case "runbook_recursion", "runbook_depth", "runbook_invalid", "runbook_host_busy":
			// stage0 sent the messages as one event, one per line and no
			// newline after the last, and the same text in done.
			st := s.startStream(q.w)
			msgs := messagesOf(err)
			if reasonOf(err) == "runbook_host_busy" {
				// A stage0 client cannot name a host: the list is the
				// config's, and on orderly serve it holds serve's host
				// alone, so every sub-runbook lands here until the
				// operator adds one.
				msgs[0] += fmt.Sprintf(": every host of compat.stage0.hosts (%s) is running one; list another there, with a worker serving it", strings.Join(sc.Hosts, ", "))
			}
			text := strings.Join(msgs, "\n")
			st.event("stderr", text)
			st.done(rb.File, 1, "", text, msgs, nil)
		case "runbook_env":
			// stage0 met a bad name while setting the variables, past
			// validation: its event ends in a newline, done's stderr does
			// not, and done has no errors, only the file's warnings.
			st := s.startStream(q.w)
			msg := asOrderError(err).Message
			st.event("stderr", msg+"\n")
			st.done(rb.File, 1, "", msg, nil, rb.Warnings)
		default:
			if np, ok := unqueued(err); ok {
				// Recorded, but the bus refused it: the answer is a
				// failure, so the run must not start later when the
				// reconciler queues it (a client told it failed runs it
				// again).
				if werr := withdraw(ctx, s.Orders, np, q.p); werr != nil {
					err = werr
				} else {
					// Not "it will be queued automatically": withdrawn.
					err = &order.Error{Code: order.CodeUnavailable, Err: err,
						Message: "order " + np.ID.String() + " could not be queued: the message bus is unavailable; canceled"}
				}
			}
			code, msg := statusFor(q.r, err)
			stage0Fail(q.w, code, msg)
		}
		return
	}

	st := s.startStream(q.w)
	limit := q.cfg.Worker.MaxOutputBytes
	lines := map[string]*lineSplitter{"stdout": {limit: limit}, "stderr": {limit: limit}}
	final, err := s.Runbooks.FollowOrder(ctx, o, func(stream string, p []byte) {
		if ls := lines[stream]; ls != nil {
			ls.write(p, func(line string) { st.event(stream, line) })
		}
	})
	if id, ok := api.CredentialGone(err); ok {
		// Inside the stream, as stage0 reported its other failures: a
		// stderr event and done, naming the run, which goes on.
		s.Orders.AuditRefusal(ctx, q.r, q.p.Name, q.ip, "stage0", http.StatusUnauthorized, err)
		msg := revoked + ": run " + id.String() + " was accepted and goes on; its output is no longer sent to this token"
		st.event("stderr", msg+"\n")
		st.done(rb.File, 1, "", msg, []string{msg}, rb.Warnings)
		return
	}
	if err != nil {
		if ctx.Err() == nil {
			// The server could not follow the run while the client
			// waits (FollowOrder rides out an unreadable live stream
			// and row on its poll, so no cause is left today): the run
			// is not the client's to lose, so it goes on. The stream is
			// cut rather than ended, so no client takes it for the
			// whole.
			panic(http.ErrAbortHandler)
		}
		// The client went away, or the API is stopping and ended the
		// follow (a run that started runs on, as stage0's script did).
		abandonWait(ctx, s.Runbooks, o, q.p.Name, "the stage0 client went away before the run started")
	}
	for _, name := range []string{"stdout", "stderr"} {
		if cutByWorker(final, name) {
			// The live stream stopped at the worker's cap, mid-line: the
			// tail is not a line the script printed.
			lines[name].drop()
			continue
		}
		lines[name].flush(func(line string) { st.event(name, line) })
	}
	rc, note := runEnd(final)
	out, errOut := lines["stdout"].kept.String(), lines["stderr"].kept.String()
	if out == "" && lines["stdout"].seen == 0 {
		out = storedOutput(final, "stdout") // no live output reached us
	}
	if errOut == "" && lines["stderr"].seen == 0 {
		errOut = storedOutput(final, "stderr")
	}
	if note != "" {
		// stage0 sent its timeout note as an event of its own.
		st.event("stderr", note)
		errOut += note
	}
	if final.Result != nil && (final.Result.Stdout.Truncated || final.Result.Stderr.Truncated ||
		lines["stdout"].dropped || lines["stderr"].dropped) {
		// The limit that applied: the worker's own when it cut a stream
		// with a lower one than this API's (each machine has its own
		// worker.max_output_bytes).
		applied := limit
		if cutByWorker(final, "stdout") || cutByWorker(final, "stderr") {
			if c, ok := s.Runbooks.OutputCap(ctx, final); ok && c > 0 {
				applied = min(applied, c)
			}
		}
		errOut += fmt.Sprintf("\n[WARNING: Output truncated due to size limit (%d bytes)]\n", applied)
	}
	var errs []string
	if _, _, ok := hostRefusal(final); ok && note != "" {
		// The host's worker refused the run (its env_deny, its rules):
		// a check that failed, reported as stage0 reported its own
		// (validation's): the reason in errors as well as in stderr, so
		// a client that reads errors for why nothing ran finds it.
		errs = []string{strings.TrimSuffix(note, "\n")}
	}
	st.done(rb.File, rc, out, errOut, errs, rb.Warnings)
}

// wellNamed is the request's variables whose names stage0 would accept,
// sanitised, for judging which required variables the request sets. One
// whose value orderly refuses (an object or a list) counts as set, to "":
// the run is refused for that value, and the refusal must say so, not
// call it or the request's other variables unset.
func wellNamed(vars map[string]json.RawMessage) map[string]string {
	env := map[string]string{}
	for name, raw := range vars {
		if runbook.ValidEnvName(name) {
			one, _ := runbook.Sanitize(map[string]json.RawMessage{name: raw})
			env[name] = one[name]
		}
	}
	return env
}

// storedOutput is a stream of the finished order as PostgreSQL holds it,
// its line ends read as Python's text mode read them.
func storedOutput(o *order.Order, name string) string {
	if o.Result == nil {
		return ""
	}
	out := o.Result.Stderr
	if name == "stdout" {
		out = o.Result.Stdout
	}
	return universalNewlines(string(out.Content))
}

// universalNewlines is s as Python's text mode (subprocess text=True)
// read it: CRLF and a lone CR are each one LF.
func universalNewlines(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\r", "\n")
}

// messagesOf returns the messages of a refusal: every problem of an
// invalid runbook, else the one message.
func messagesOf(err error) []string {
	if e := asOrderError(err); e != nil {
		if ps, ok := e.Details["problems"].([]runbook.Problem); ok {
			return runbook.Messages(ps)
		}
		return []string{e.Message}
	}
	return []string{err.Error()}
}

// lineSplitter turns output chunks into lines as stage0 read them from a
// text-mode pipe: each line keeps its end, and CRLF and a lone CR end a
// line as LF does and read as LF (universal newlines). Whole lines past
// limit bytes are dropped.
type lineSplitter struct {
	limit   int64
	partial []byte
	kept    strings.Builder
	seen    int64
	dropped bool
}

func (l *lineSplitter) write(p []byte, emit func(string)) {
	l.seen += int64(len(p))
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexAny(l.partial, "\r\n")
		if i < 0 {
			return
		}
		next := i + 1
		if l.partial[i] == '\r' {
			if next == len(l.partial) {
				return // a CR last in a chunk: the next may start with its LF
			}
			if l.partial[next] == '\n' {
				next++
			}
		}
		l.line(string(l.partial[:i])+"\n", emit)
		l.partial = l.partial[next:]
	}
}

func (l *lineSplitter) flush(emit func(string)) {
	if len(l.partial) > 0 {
		s := string(l.partial)
		if strings.HasSuffix(s, "\r") {
			s = s[:len(s)-1] + "\n"
		}
		l.line(s, emit)
		l.partial = nil
	}
}

// drop ends the stream without its unfinished last line.
func (l *lineSplitter) drop() {
	if len(l.partial) > 0 {
		l.dropped = true
		l.partial = nil
	}
}

func (l *lineSplitter) line(s string, emit func(string)) {
	if int64(l.kept.Len()+len(s)) > l.limit {
		l.dropped = true
		return
	}
	l.kept.WriteString(s)
	emit(pyDecode(s))
}

// cutByWorker reports whether the worker capped the order's stream name.
func cutByWorker(o *order.Order, name string) bool {
	if o.Result == nil {
		return false
	}
	if name == "stdout" {
		return o.Result.Stdout.Truncated
	}
	return o.Result.Stderr.Truncated
}

// stage0Stream writes stage0's event stream.
type stage0Stream struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (s *Stage0) startStream(w http.ResponseWriter) *stage0Stream {
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	// no-store, not stage0's no-cache: the stream is the run's output,
	// which a browser's fetch kept in its disk cache under no-cache
	// (api's apiHeaders).
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	return &stage0Stream{w: w, rc: rc}
}

// event writes one event: each line of data as its own "data: " line
// (CR and CRLF read as LF first), so data ending in a newline ends with
// an empty "data: " line.
func (st *stage0Stream) event(name, data string) {
	data = strings.ReplaceAll(strings.ReplaceAll(data, "\r\n", "\n"), "\r", "\n")
	var b strings.Builder
	b.WriteString("event: " + name + "\n")
	for _, line := range strings.Split(data, "\n") {
		b.WriteString("data: " + line + "\n")
	}
	b.WriteString("\n")
	if _, err := st.w.Write([]byte(b.String())); err == nil {
		_ = st.rc.Flush()
	}
}

// done writes the last event, its JSON spaced and escaped as Python's
// json.dumps writes it.
func (st *stage0Stream) done(file string, rc int, stdout, stderr string, errs, warnings []string) {
	st.event("done", "{"+strings.Join([]string{
		`"success": ` + strconv.FormatBool(rc == 0),
		`"runbook": ` + pyString(file),
		`"return_code": ` + strconv.Itoa(rc),
		`"stdout": ` + pyString(stdout),
		`"stderr": ` + pyString(stderr),
		`"errors": ` + pyList(errs),
		`"warnings": ` + pyList(warnings),
	}, ", ")+"}")
}

// pyString is s as json.dumps writes a str, s read as Python read the
// bytes (pyDecode).
func pyString(s string) string { return pyrepr.JSON(pyDecode(s)) }

func pyList(items []string) string { return pyrepr.List(items, pyString) }
