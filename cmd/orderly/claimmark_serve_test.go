package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestServesWorkerSignsItsMarkWithItsHostsSeed: serve's own worker
// connects with serve's seed, which no standby of its host has; it signs
// its host's claim mark with the key of the worker seed serve writes for
// that host (worker-<host>.nk), the one a standby `orderly worker`
// connects with, so the standby checks the mark serve's worker wrote
// and the other way round. Signed with serve's seed, each would take the
// other's mark as no mark at every takeover.
func TestServesWorkerSignsItsMarkWithItsHostsSeed(t *testing.T) {
	p := startBusServe(t, serveDataDir(t, "orderly-mark-"), nil)
	code, b := p.do(t, "POST", "/v1/orders", map[string]any{"host": "srv", "command": "true"})
	if code != http.StatusAccepted {
		t.Fatalf("submit: %d %s", code, b)
	}
	var o api.Order
	if err := json.Unmarshal(b, &o); err != nil {
		t.Fatal(err)
	}
	if got := p.waitFor(t, o.ID, terminal); got.Status != "succeeded" {
		t.Fatalf("order: %s, want succeeded", got.Status)
	}

	ctx := t.Context()
	q, err := queue.Bind(ctx, dialBus(t, p.natsURL, filepath.Join(p.creds, "api.nk"), queue.APIInbox).nc, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := claimMarkKey(filepath.Join(p.creds, "worker-srv.nk"))
	if err != nil {
		t.Fatal(err)
	}
	serveKey, err := claimMarkKey(filepath.Join(p.creds, "serve.nk"))
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, 20*time.Second, "srv's claim mark checked with worker-srv.nk's key", func() bool {
		m, err := q.ClaimMarkOf(ctx, "srv", hostKey)
		return err == nil && m.Seq > 0
	})
	if m, err := q.ClaimMarkOf(ctx, "srv", serveKey); !errors.Is(err, queue.ErrUnauthenticatedClaimMark) {
		t.Fatalf("srv's claim mark checked with serve.nk's key: %+v %v, want ErrUnauthenticatedClaimMark", m, err)
	}
}
