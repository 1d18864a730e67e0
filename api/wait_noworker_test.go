package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

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
