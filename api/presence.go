package api

import (
	"context"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
)

// The presence of an API process in PostgreSQL (api_presence) lives
// PresenceLife past its last renewal, renewed every PresenceEvery. An
// order bound to a process that died is canceled at its claim once that
// life has passed; one claimed sooner runs for nobody. `orderly serve`,
// killed and restarted at once, ends its predecessor's presence before
// its worker claims (cmd/orderly takeOverPresence), whatever its host
// lease.
const (
	PresenceLife  = 10 * time.Second
	PresenceEvery = 2 * time.Second
)

// PresenceStore records an API process's presence.
type PresenceStore interface {
	RenewPresence(ctx context.Context, p postgres.Presence, life time.Duration) error
	EndPresence(ctx context.Context, instance uuid.UUID) error
}

// Presence keeps this API process present in PostgreSQL while it runs,
// so that the orders it waits for on behalf of clients that never learn
// their ids (the compat surfaces') are canceled at their claim, never
// run, once it is gone (docs/compat.md). Native orders are never bound:
// their clients hold their ids.
type Presence struct {
	store  PresenceStore
	self   postgres.Presence
	logger *slog.Logger
	start  time.Time // the monotonic clock's origin for renewed
	// renewed is when the last renewal that succeeded was sent, in
	// nanoseconds since start, plus one; 0 before the first.
	renewed atomic.Int64
}

// NewPresence returns the presence of this process, under a new instance
// id; Run keeps it.
func NewPresence(store PresenceStore, logger *slog.Logger) *Presence {
	host, _ := os.Hostname()
	return &Presence{store: store, logger: logger, start: time.Now(),
		self: postgres.Presence{Instance: uuid.New(), Hostname: host, PID: os.Getpid()}}
}

// Instance is the id orders bound to this process name as their waiter.
func (p *Presence) Instance() uuid.UUID { return p.self.Instance }

// Run renews the presence every PresenceEvery until ctx ends, then ends
// it: the orders still queued for this process's waiters are canceled at
// their claim (its waiters canceled theirs as their requests ended).
func (p *Presence) Run(ctx context.Context) {
	t := time.NewTicker(PresenceEvery)
	defer t.Stop()
	failing := false
	for {
		sent := time.Since(p.start)
		// Each renewal is bounded by half the life: one stuck on a dead
		// link (tcp_user_timeout, 20 s: a PostgreSQL that failed over)
		// held the next for longer than the life, and the presence
		// lapsed while a new connection would have renewed it, so the
		// worker canceled orders whose clients still waited here.
		rctx, cancel := context.WithTimeout(ctx, PresenceLife/2)
		err := p.store.RenewPresence(rctx, p.self, PresenceLife)
		cancel()
		switch {
		case ctx.Err() != nil:
		case err != nil && !failing:
			failing = true
			p.logger.Warn("cannot renew the API's presence: orders of compat clients that wait here are not bound to it until it is renewed",
				"instance", p.self.Instance, "error", err)
		case err == nil:
			if failing {
				failing = false
				p.logger.Info("the API's presence is renewed again", "instance", p.self.Instance)
			}
			p.renewed.Store(int64(sent) + 1)
		}
		select {
		case <-ctx.Done():
			ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			if err := p.store.EndPresence(ectx, p.self.Instance); err != nil {
				p.logger.Debug("end the API's presence", "instance", p.self.Instance, "error", err)
			}
			cancel()
			return
		case <-t.C:
		}
	}
}

// Bind makes o's waiter this process when its presence is safely alive:
// renewed within the last half of its life. Otherwise o stays unbound
// and runs whatever becomes of this process, as before waiters were
// bound: a presence that lapses while its process lives would cancel
// orders whose clients still wait.
func (p *Presence) Bind(o *order.Order) {
	if p == nil {
		return
	}
	r := p.renewed.Load()
	if r == 0 || time.Since(p.start)-time.Duration(r-1) >= PresenceLife/2 {
		return
	}
	o.Waiter = p.self.Instance
}
