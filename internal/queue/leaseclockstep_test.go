package queue_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestWaitingStandbyLeavesALeaseAClockStepExpired: nats-server expires a
// message of a bucket with MaxAge by its wall clock (filestore.go,
// expireMsgs: the message's stored time against ats.AccessTime, both
// time.Now), so a server clock stepped forward past the lease removes
// every lease key while its holder lives, with no marker in the hosts
// bucket and nothing for a watch to see: what a purge of the key's
// subject does, which stands in for the step here (this machine's clock
// is not stepped). A standby already waiting times its try on its own
// monotonic clock from the last renewal it saw, and the holder puts the
// key back at its next renewal, which the standby sees as one: the host
// stays with its holder, signed or not. (docs/deploy.md, "Clocks", said
// a standby took the host over then.)
func TestWaitingStandbyLeavesALeaseAClockStepExpired(t *testing.T) {
	for _, tc := range []struct {
		name string
		k    queue.MarkKey
	}{
		{"signed", queue.NewMarkKey([]byte("seed of c1"))},
		{"unsigned", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const ttl = time.Second
			ctx := testenv.Context(t)
			url := testenv.NATS(t)
			holder := testenv.Queue(t, url, "holder", queue.Options{LeaseTTL: ttl})
			standby := testenv.Queue(t, url, "standby", queue.Options{LeaseTTL: ttl})
			a, err := holder.AcquireSignedLease(ctx, "c1", "A", tc.k, nil)
			if err != nil {
				t.Fatal(err)
			}
			var lost atomic.Pointer[error]
			var wg sync.WaitGroup
			rctx, stopRenewing := context.WithCancel(ctx)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for rctx.Err() == nil {
					if _, err := a.Renew(rctx); errors.Is(err, queue.ErrLeaseLost) {
						lost.Store(&err)
						return
					}
					select {
					case <-rctx.Done():
					case <-time.After(ttl / 3):
					}
				}
			}()
			waiting, took := make(chan struct{}), make(chan *queue.Lease, 1)
			var once sync.Once
			sctx, stopStandby := context.WithCancel(ctx)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for sctx.Err() == nil {
					l, err := standby.AcquireSignedLease(sctx, "c1", "B", tc.k, func(string) { once.Do(func() { close(waiting) }) })
					if err == nil {
						took <- l
						return
					}
				}
			}()
			defer func() {
				stopRenewing()
				stopStandby()
				wg.Wait()
			}()
			<-waiting
			time.Sleep(ttl)
			st, err := holder.JetStream().Stream(ctx, "KV_"+queue.HostsBucket)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				if err := st.Purge(ctx, jetstream.WithPurgeSubject("$KV."+queue.HostsBucket+".lease.c1")); err != nil {
					t.Fatal(err)
				}
				select {
				case l := <-took:
					t.Fatalf("step %d: the standby took the lease (freed %q) while its holder renewed it", i+1, l.Freed())
				case <-time.After(2 * ttl):
				}
			}
			if err := lost.Load(); err != nil {
				t.Fatalf("the holder lost its lease: %v", *err)
			}
			stopRenewing()
			select {
			case <-took:
			case <-time.After(10 * ttl):
				t.Fatal("the standby did not take the lease its holder stopped renewing")
			}
		})
	}
}
