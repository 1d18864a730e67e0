package api_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// stuckRenewal is a presence store whose first renewal never gets its
// answer, as one sent on a connection whose link died without a word
// (its server failed over): it ends only with its context. The ones
// after it succeed, as on a new connection.
type stuckRenewal struct {
	tries atomic.Int32
}

func (s *stuckRenewal) RenewPresence(ctx context.Context, _ postgres.Presence, _ time.Duration) error {
	if s.tries.Add(1) == 1 {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (s *stuckRenewal) EndPresence(context.Context, uuid.UUID) error { return nil }

// TestPresenceRenewalStuckOnADeadLinkIsTriedAgain: a renewal that gets
// no answer is given up in time for the next to keep the presence alive,
// and the API binds its compat clients' orders again. Unbounded, it
// waited for as long as the link took to fail (20 s), past the
// presence's life (10 s): the worker canceled the orders of clients
// still waiting on a live API.
func TestPresenceRenewalStuckOnADeadLinkIsTriedAgain(t *testing.T) {
	store := &stuckRenewal{}
	p := api.NewPresence(store, testenv.Logger(t))
	ctx, end := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); p.Run(ctx) }()
	t.Cleanup(func() { end(); <-ran })
	testenv.WaitUntil(t, api.PresenceLife+20*time.Second, "a renewal after the stuck one", func() bool {
		return store.tries.Load() >= 2
	})
	testenv.WaitUntil(t, 20*time.Second, "an order bound after it", func() bool {
		var o order.Order
		p.Bind(&o)
		return o.Waiter == p.Instance()
	})
}
