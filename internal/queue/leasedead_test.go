package queue_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// errorLines keeps the message of every ERROR record.
type errorLines struct {
	mu    *sync.Mutex
	lines *[]string
}

func (h errorLines) Enabled(context.Context, slog.Level) bool { return true }
func (h errorLines) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		h.mu.Lock()
		*h.lines = append(*h.lines, r.Message)
		h.mu.Unlock()
	}
	return nil
}
func (h errorLines) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h errorLines) WithGroup(string) slog.Handler      { return h }

// TestStandbyOfADeadHolderSeesNoForgery: a worker killed with SIGKILL and
// started again at once (docs/deploy.md's first fleet, decisions.md
// hI21) waits as its own host's standby on the dead instance's last
// renewal, and read that one value twice (its first read and its watch,
// or its next read). The second read judged it by the floor the first
// had raised to its own revision, found it written after a revision
// below that, and logged at ERROR that another credential wrote the
// lease: an operator restarting a worker was told its host's NATS
// credential was abused. The value honoured, read again at the same
// revision, is the same value, honoured again; the standby takes the
// host a lease after the holder's last renewal, saying nothing of
// forgeries.
func TestStandbyOfADeadHolderSeesNoForgery(t *testing.T) {
	const ttl = 2 * time.Second
	var mu sync.Mutex
	var lines []string
	nc, err := queue.Connect(testenv.NATS(t), "queue-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := testenv.Context(t)
	q, err := queue.New(ctx, nc, queue.Options{LeaseTTL: ttl, Logger: slog.New(errorLines{&mu, &lines})})
	if err != nil {
		t.Fatal(err)
	}
	k := queue.NewMarkKey([]byte("seed of d1"))
	a, err := q.AcquireSignedLease(ctx, "d1", "d1/a", k, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	// d1/a dies here: no renewal, no release.
	b, err := q.AcquireSignedLease(ctx, "d1", "d1/b", k, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.Freed() != "expired" {
		t.Fatalf("the standby took the dead holder's lease as %q, want expired", b.Freed())
	}
	mu.Lock()
	defer mu.Unlock()
	for _, l := range lines {
		if strings.Contains(l, "credential") {
			t.Errorf("the standby of a dead holder of its own credential logged: %s", l)
		}
	}
}
