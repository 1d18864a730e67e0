package queue

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// vanishingCreate is the hosts bucket whose Create of key first purges
// the key's subject: the key vanishes (a server's clock step, a purge)
// after the standby looked at it and before its Create, as the worker's
// TestWorkerStartedOnAnAbsentLeaseLeavesTheHostToItsHolder, which purges
// the key every 10 ms, had it on a loaded machine (hH24).
type vanishingCreate struct {
	jetstream.KeyValue
	st      jetstream.Stream
	key     string
	creates atomic.Int32
}

func (k *vanishingCreate) Create(ctx context.Context, key string, val []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	if key == k.key {
		k.creates.Add(1)
		if err := k.st.Purge(ctx, jetstream.WithPurgeSubject("$KV."+HostsBucket+"."+key)); err != nil {
			return 0, err
		}
	}
	return k.KeyValue.Create(ctx, key, val, opts...)
}

// TestStandbyLeavesAKeyThatVanishesBeforeItsCreate: a standby that knows
// another instance held the host lately leaves an absent key to it for a
// lease (goneUnseen), but it looked first and wrote after: a key its
// holder had just put back, found there, then gone before the Create,
// was created, and the live holder lost its host (its order interrupted
// by the takeover). A value found at the look is the holder's, and no
// Create is sent on it: the standby waits a lease after the holder's
// last renewal, and takes the host once the renewals stop.
func TestStandbyLeavesAKeyThatVanishesBeforeItsCreate(t *testing.T) {
	const ttl = time.Second
	for _, tc := range []struct {
		name string
		k    MarkKey
	}{
		{"signed", NewMarkKey([]byte("seed of vn"))},
		{"unsigned", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, _ := embeddedJetStream(t)
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			holder, err := New(ctx, nc, Options{LeaseTTL: ttl})
			if err != nil {
				t.Fatal(err)
			}
			snc, err := nats.Connect(nc.ConnectedUrl())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(snc.Close)
			standby, err := New(ctx, snc, Options{LeaseTTL: ttl})
			if err != nil {
				t.Fatal(err)
			}
			st, err := holder.js.Stream(ctx, "KV_"+HostsBucket)
			if err != nil {
				t.Fatal(err)
			}
			vanish := &vanishingCreate{KeyValue: standby.kv, st: st, key: "lease.vn"}
			standby.kv = vanish

			a, err := holder.AcquireSignedLease(ctx, "vn", "A", tc.k, nil)
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
					if _, err := a.Renew(rctx); errors.Is(err, ErrLeaseLost) {
						lost.Store(&err)
						return
					}
					select {
					case <-rctx.Done():
					case <-time.After(ttl / 3):
					}
				}
			}()
			// As the worker does when PostgreSQL names another owner.
			standby.HeldElsewhere("vn")
			took := make(chan *Lease, 1)
			sctx, stopStandby := context.WithCancel(ctx)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for sctx.Err() == nil {
					if l, err := standby.AcquireSignedLease(sctx, "vn", "B", tc.k, nil); err == nil {
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
			select {
			case l := <-took:
				t.Fatalf("the standby took the lease (freed %q, %d creates) while its holder renewed it", l.Freed(), vanish.creates.Load())
			case <-time.After(3 * ttl):
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
