package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestForgetHostRefusedWhileAWorkerWaitsForIt: between the death of a
// host's worker (its heartbeat expired) and its standby's takeover, the
// forget went through, and the standby made the host known again a
// moment later, setting up the consumer and keys just removed. A standby
// is a worker still configured for the host: the forget is refused while
// one reports, and while a worker holds the host's lease without a
// heartbeat yet (taking it over), naming it; once it stops, it goes
// through.
func TestForgetHostRefusedWhileAWorkerWaitsForIt(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	ctx := testenv.Context(t)
	if err := e.store.TouchHost(ctx, "orphan", "1.0", "orphan/1"); err != nil {
		t.Fatal(err)
	}
	forget := func(want int, wantText string) {
		t.Helper()
		code, body := e.do("admin", http.MethodDelete, "/v1/hosts/orphan", nil)
		var eb api.ErrorBody
		if code != want || wantText != "" && (json.Unmarshal(body, &eb) != nil || string(eb.Error.Code) != "conflict" ||
			!strings.Contains(eb.Error.Message, wantText)) {
			t.Fatalf("DELETE: %d %s, want %d %q", code, body, want, wantText)
		}
	}
	// orphan/1 died: no heartbeat, no lease; orphan/2 stands by.
	rev, err := e.q.StandbyBeat(ctx, queue.HostInfo{Host: "orphan", Instance: "orphan/2", StartedAt: time.Now(), LastSeen: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	forget(http.StatusConflict, "has a standby worker (orphan/2) waiting to take it over: stop it first")
	// It takes the lease and removes its report; its takeover has not
	// beaten yet.
	lease, err := e.q.AcquireLease(ctx, "orphan", "orphan/2", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.q.StandbyGone(ctx, "orphan", "orphan/2", rev); err != nil {
		t.Fatal(err)
	}
	forget(http.StatusConflict, "is being taken over by worker orphan/2: stop it first")
	// It stops.
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	forget(http.StatusNoContent, "")
}
