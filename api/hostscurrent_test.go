package api_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestHostsCurrentOrderFromPostgres: a host's current order came from its
// worker's heartbeat, written every nats.heartbeat only, so the listing
// showed the order before last, or none, for up to that long after an
// order started, and a finished one after it ended. It now comes from
// PostgreSQL, where the claim and the result commit: the heartbeat here
// names an order that is not running, and the listing names the one that
// is, then none once it has ended; an order a dead worker left running,
// which the new worker's takeover is settling, is not its current order.
func TestHostsCurrentOrderFromPostgres(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	ctx := testenv.Context(t)
	left := e.submit("alice", map[string]any{"host": "cur", "command": "true"}, "", http.StatusAccepted)
	o := e.submit("alice", map[string]any{"host": "cur", "command": "true"}, "", http.StatusAccepted)
	// cur/0 claimed the first order and died; cur/1 took the host over.
	if _, _, err := e.store.TakeHost(ctx, "cur", "1.0", postgres.Owner{Instance: "cur/0"}); err != nil {
		t.Fatal(err)
	}
	if _, claimed, err := e.store.Claim(ctx, left.ID, "cur/0", 1); err != nil || !claimed {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	if _, _, err := e.store.TakeHost(ctx, "cur", "1.0", postgres.Owner{Instance: "cur/1"}); err != nil {
		t.Fatal(err)
	}
	stale := uuid.Must(uuid.NewV7())
	if err := e.q.Heartbeat(ctx, queue.HostInfo{Host: "cur", Instance: "cur/1", LastSeen: time.Now(), CurrentOrder: &stale}); err != nil {
		t.Fatal(err)
	}
	current := func() *uuid.UUID {
		t.Helper()
		code, body := e.do("admin", http.MethodGet, "/v1/hosts", nil)
		var list struct{ Hosts []api.Host }
		if err := json.Unmarshal(body, &list); code != http.StatusOK || err != nil {
			t.Fatalf("hosts: %d %s", code, body)
		}
		for _, h := range list.Hosts {
			if h.Host == "cur" {
				if !h.Online {
					t.Fatalf("the beating host is offline: %s", body)
				}
				return h.CurrentOrder
			}
		}
		t.Fatalf("host cur not listed: %s", body)
		return nil
	}
	// Neither the heartbeat's order (not running) nor the dead worker's,
	// which the takeover settles.
	if cur := current(); cur != nil {
		t.Fatalf("current order %s during the takeover, want none (the heartbeat names %s, cur/0 left %s)", cur, stale, left.ID)
	}
	if ok, err := e.store.InterruptAttempt(ctx, left.ID, 1, "cur/1", "test: taken over", nil); err != nil || !ok {
		t.Fatalf("settle the order left running: %v %v", ok, err)
	}
	if _, claimed, err := e.store.Claim(ctx, o.ID, "cur/1", 2); err != nil || !claimed {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	if cur := current(); cur == nil || *cur != o.ID {
		t.Fatalf("current order %v while %s runs", cur, o.ID)
	}
	if ok, err := e.store.InterruptAttempt(ctx, o.ID, 1, "cur/1", "test: ended", nil); err != nil || !ok {
		t.Fatalf("end the order: %v %v", ok, err)
	}
	if cur := current(); cur != nil {
		t.Fatalf("current order %s after it ended", cur)
	}
}
