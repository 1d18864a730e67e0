package api_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/testenv"
)

// TestUIRunPageShowsAHandBackAtOnce: a run page that follows an order
// handed back before its command started (its worker stopped while the
// order waited for a file descriptor) shows it queued as the stream
// says so (hE22's `queued` with handed_back), not "running" until its
// next check; so does a page opened after the hand-back, which replays
// `started` and then that `queued`. The page's check of the order
// (every 5 s, which would mend the badge by itself) is refused by the
// browser throughout, so only the stream can change the badge. The
// host's next worker then runs the order and the page shows its end.
func TestUIRunPageShowsAHandBackAtOnce(t *testing.T) {
	const host = "fd-handback-ui"
	e := newUIEnv(t)
	store := &armedClaim{Store: e.store, reached: make(chan struct{}), open: make(chan struct{})}
	logs := &testenv.LogBuffer{}
	stop := runHandBackWorker(t, e.q, store, host, slog.New(slog.NewJSONHandler(logs, nil)))
	openClaim := sync.OnceFunc(func() { close(store.open) })
	t.Cleanup(openClaim) // before the worker's stop: a claim held stops nothing
	if rec := e.rest("alice", "POST", "/v1/orders?wait=20", map[string]any{"host": host, "command": "true"}); rec.Code != 200 {
		t.Fatalf("the first order: %d %s", rec.Code, rec.Body)
	}
	ctx := browser(t)
	refused := refuseChecks(t, ctx)
	recordBadges(t, ctx)
	streamed := streamedEvents(t, ctx)
	signIn(t, ctx, e, "alice")

	store.armed.Store(true)
	rec := e.rest("alice", "POST", "/v1/orders", map[string]any{"host": host, "command": "echo", "args": []string{"ran"}})
	if rec.Code != 202 {
		t.Fatalf("submit: %d %s", rec.Code, rec.Body)
	}
	var sub struct{ ID uuid.UUID }
	if err := json.Unmarshal(rec.Body.Bytes(), &sub); err != nil {
		t.Fatal(err)
	}
	select {
	case <-store.reached:
	case <-testenv.Context(t).Done():
		t.Fatal("the order was never claimed")
	}

	step(t, ctx, "open the run page", chromedp.Navigate(e.url+"/ui/orders/"+sub.ID.String()), chromedp.WaitVisible(chromedp.ID("run")))
	const badges = `window.badges.join(" ")`
	// The stream's connection is open (its first event came) before the
	// descriptors run out.
	testenv.WaitUntil(t, 20*time.Second, "the page's stream to send its first event", func() bool { return len(streamed()) > 0 })
	if got := eval[string](t, ctx, badges); got != "queued" {
		t.Fatalf("the page showed %q, want queued", got)
	}
	release := exhaustDescriptors(t)
	openClaim()
	testenv.WaitUntil(t, 20*time.Second, "the worker to say it is out of file descriptors", func() bool {
		return strings.Contains(logs.String(), "out of file descriptors")
	})
	waitJS(t, ctx, "the page to show the claim's started event", badges+` === "queued running"`, 20*time.Second)
	// The page checks the order every 5 s: one check refused shows the
	// refusal holds, so only the stream can move the badge from here.
	testenv.WaitUntil(t, 20*time.Second, "the page's check of the order (refused)", func() bool { return refused.Load() > 0 })
	stopForHandBack(t, stop, release, e.store, sub.ID)
	const queuedBadge = ` && document.getElementById("status").className === "badge queued"`
	waitJS(t, ctx, "the open page to show the hand-back (it was left with running)", badges+` === "queued running queued"`+queuedBadge, 20*time.Second)

	step(t, ctx, "open the page again after the hand-back", chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("run")))
	waitJS(t, ctx, "a page opened after the hand-back to end on its replayed queued (it was left with the replayed running)",
		`!!document.getElementById("run").dataset.events && `+badges+` === "queued running queued"`+queuedBadge, 20*time.Second)
	t.Logf("the pages' checks refused by the browser: %d", refused.Load())

	e.startWorker(host)
	waitJS(t, ctx, "the next tenure's run to its end", `document.readyState === "complete" && !!document.getElementById("run") && `+
		`!document.getElementById("run").dataset.events && document.getElementById("status").innerText === "succeeded" && document.getElementById("output").textContent === "ran\n"`, time.Minute)
}

// refuseChecks makes the browser of ctx fail the run page's checks of
// its order (ui.js's resync: a fetch() of the page marked
// X-Orderly-Refresh), and lets every other request of an order's pages
// through, its event stream first; it counts the refusals. (The pattern's
// resource type does not single them out: Chromium pauses the
// EventSource's request as XHR.)
func refuseChecks(t *testing.T, ctx context.Context) *atomic.Int64 {
	t.Helper()
	var n atomic.Int64
	if err := chromedp.Listen(ctx, func(ev any) {
		p, ok := ev.(*fetch.EventRequestPaused)
		if !ok {
			return
		}
		check := false
		for k := range p.Request.Headers {
			check = check || strings.EqualFold(k, "X-Orderly-Refresh")
		}
		// Not here: a command from the listener waits on the loop that
		// runs the listener.
		go func() {
			if !check {
				_, _ = chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: p.RequestID})
				return
			}
			n.Add(1)
			_, _ = chromedp.Call(ctx, fetch.FailRequest, fetch.FailRequestParams{RequestID: p.RequestID, ErrorReason: network.ErrorReasonBlockedByClient})
		}()
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "*/ui/orders/*"}}}); err != nil {
		t.Fatal(err)
	}
	return &n
}

// recordBadges keeps, in each page the tab of ctx loads from now on,
// window.badges: every text the run page's status badge shows, in
// order, from the one the server rendered on.
func recordBadges(t *testing.T, ctx context.Context) {
	t.Helper()
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `window.badges = [];
new MutationObserver(function () {
  const el = document.getElementById("status");
  if (el && el.textContent && el.textContent !== window.badges[window.badges.length - 1]) window.badges.push(el.textContent);
}).observe(document, {childList: true, subtree: true, characterData: true});`,
	}); err != nil {
		t.Fatal(err)
	}
}

// streamedEvents returns what the event streams of the tab of ctx
// received so far, by event name.
func streamedEvents(t *testing.T, ctx context.Context) func() []string {
	t.Helper()
	var mu sync.Mutex
	var names []string
	if err := chromedp.Listen(ctx, func(ev any) {
		if m, ok := ev.(*network.EventEventSourceMessageReceived); ok {
			mu.Lock()
			names = append(names, m.EventName)
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(names)
	}
}
