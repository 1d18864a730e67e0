package api_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/api/client"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestWaitOnAHostNoWorkerServesSaysSo: a waited submission whose order is
// still queued when the wait ends on a host no worker serves answers its
// 202 with Orderly-Worker (none online, and when the host was last
// seen); before, the same 202 as any order still running, which said
// nothing of why. A host whose worker is online answers no such header,
// whether the order runs or waits behind another.
func TestWaitOnAHostNoWorkerServesSaysSo(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"nw-busy"}})
	if err := e.store.TouchHost(testenv.Context(t), "nw-gone", "test", "nw-gone/1"); err != nil {
		t.Fatal(err)
	}
	submit := func(host string, args ...string) (int, http.Header, []byte) {
		t.Helper()
		return e.doHeader("alice", http.MethodPost, "/v1/orders?wait=1", map[string]any{"host": host, "command": args[0], "args": args[1:]})
	}
	for _, c := range []struct{ host, want string }{
		{"nw-never", "none online; never seen"},
		{"nw-gone", "none online; last seen "},
	} {
		code, hdr, b := submit(c.host, "true")
		if code != http.StatusAccepted || !strings.Contains(string(b), `"status":"queued"`) {
			t.Fatalf("%s: POST ?wait=1 = %d %s, want 202 with the order queued", c.host, code, b)
		}
		if got := hdr.Get("Orderly-Worker"); !strings.HasPrefix(got, c.want) {
			t.Errorf("%s, no worker: Orderly-Worker %q, want %q…", c.host, got, c.want)
		} else if c.host == "nw-gone" {
			if _, err := time.Parse(time.RFC3339, strings.TrimPrefix(got, c.want)); err != nil {
				t.Errorf("%s: Orderly-Worker %q: the time is not RFC 3339: %v", c.host, got, err)
			}
		}
	}

	// The Go client says it too.
	c, err := client.New(e.url, e.tokens["alice"])
	if err != nil {
		t.Fatal(err)
	}
	sub, err := c.Submit(testenv.Context(t), client.SubmitRequest{Host: "nw-never", Command: "true"}, client.SubmitOptions{Wait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if sub.NoWorker != "none online; never seen" {
		t.Errorf("the Go client's submission to nw-never: NoWorker %q, want %q", sub.NoWorker, "none online; never seen")
	}

	// A worker online: one order running past the wait, one queued behind it.
	testenv.WaitUntil(t, 20*time.Second, "nw-busy's worker online", func() bool {
		code, b := e.do("alice", http.MethodGet, "/v1/hosts/nw-busy", nil)
		return code == http.StatusOK && strings.Contains(string(b), `"online":true`)
	})
	code, hdr, b := submit("nw-busy", "sleep", "5")
	if code != http.StatusAccepted || hdr.Get("Orderly-Worker") != "" {
		t.Fatalf("nw-busy, its order running: POST ?wait=1 = %d, Orderly-Worker %q: %s; want 202 and none", code, hdr.Get("Orderly-Worker"), b)
	}
	code, hdr, b = submit("nw-busy", "true")
	if code != http.StatusAccepted || !strings.Contains(string(b), `"status":"queued"`) || hdr.Get("Orderly-Worker") != "" {
		t.Fatalf("nw-busy, its order queued behind one running: POST ?wait=1 = %d, Orderly-Worker %q: %s; want 202 queued and none", code, hdr.Get("Orderly-Worker"), b)
	}
}

// TestWaitOnAHostNoWorkerServesAnswersWithinItsWaitWithNATSFrozen: the
// Go client asks for a wait a second short of its context's deadline
// (SubmitOptions.within: past it the answer, and with it the order's id,
// is lost while the order stays queued). The Orderly-Worker lookup after
// the wait waited up to 3 s (hostsRegistryTimeout) for a NATS that did
// not answer, and the 202 came that much past the wait. The lookup is
// bounded well under the client's second (workerNoteTimeout); the test
// allows 2 s for a loaded machine, which the 3 s before exceed.
func TestWaitOnAHostNoWorkerServesAnswersWithinItsWaitWithNATSFrozen(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	fz := newFreezer(t, ns.Addr().String())
	e := newAPIEnv(t, envOptions{natsURL: "nats://" + fz.addr()})
	c, err := client.New(e.url, e.tokens["alice"])
	if err != nil {
		t.Fatal(err)
	}
	req := client.SubmitRequest{Host: "nw-frozen", Command: "true"}
	opts := client.SubmitOptions{IdempotencyKey: "nw-frozen-1"}
	first, err := c.Submit(testenv.Context(t), req, opts)
	if err != nil || first.Order == nil {
		t.Fatalf("submit to nw-frozen: %+v, %v", first, err)
	}
	// The same submission again (its key's order, read from PostgreSQL),
	// waited; NATS frozen once the wait's subscription to the order's
	// events is made (its flush answered with it, unless the freeze came
	// first: then the answer is a 503, the scenario did not happen, and
	// it is tried again). The wait ends at its bound, the order queued.
	defer fz.thaw()
	const wait = 3 * time.Second
	opts.Wait = wait
	for try := 1; ; try++ {
		subs := ns.NumSubscriptions()
		type answer struct {
			sub *client.Submission
			err error
			in  time.Duration
		}
		done := make(chan answer, 1)
		go func() {
			start := time.Now()
			sub, err := c.Submit(testenv.Context(t), req, opts)
			done <- answer{sub, err, time.Since(start)}
		}()
		testenv.WaitUntil(t, 4*time.Second, "the wait's subscription", func() bool { return ns.NumSubscriptions() > subs })
		fz.freeze()
		a := <-done
		var ce *client.Error
		if errors.As(a.err, &ce) && ce.Status == http.StatusServiceUnavailable && try < 3 {
			t.Logf("try %d: frozen before the subscription was confirmed: %v", try, a.err)
			fz.thaw()
			continue
		}
		if a.err != nil {
			t.Fatalf("waited submission with NATS frozen: %v after %s", a.err, a.in.Round(time.Millisecond))
		}
		if a.sub.Order == nil || a.sub.Order.ID != first.Order.ID || a.sub.Finished || a.sub.NoWorker != "" {
			t.Fatalf("waited submission with NATS frozen: %+v; want the first order, queued, and no Orderly-Worker (NATS did not say)", a.sub)
		}
		if a.in > wait+2*time.Second {
			t.Fatalf("waited submission (wait %s) with NATS frozen answered after %s: the Orderly-Worker lookup held the 202 past the second the Go client leaves for it", wait, a.in.Round(time.Millisecond))
		}
		t.Logf("answered in %s (wait %s)", a.in.Round(time.Millisecond), wait)
		return
	}
}
