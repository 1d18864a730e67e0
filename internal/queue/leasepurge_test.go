package queue_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// purgeWarnings hands each WARN line that says the hosts bucket was
// purged to a channel.
type purgeWarnings struct{ seen chan string }

func (h purgeWarnings) Enabled(context.Context, slog.Level) bool { return true }
func (h purgeWarnings) Handle(_ context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn && strings.Contains(r.Message, "hosts bucket was purged") {
		select {
		case h.seen <- r.Message:
		default:
		}
	}
	return nil
}
func (h purgeWarnings) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h purgeWarnings) WithGroup(string) slog.Handler      { return h }

// TestStandbyLeavesAPurgedLeaseToItsHolder: a hosts bucket with expiry
// markers takes rollups (nats-server requires them for its markers): the
// bucket an orderly from before 2026-12-05 (night) made, or updated again
// during a rolling upgrade. Any worker's credential can purge every
// host's lease there with Nats-Rollup: all on a key of its own. A standby that found its host's key gone at its
// periodic try took the host then, though the holder lived and renewed
// within the lease, and the holder's running order ended interrupted
// (probed: sixty purges moved a host between its two workers seven
// times). Now the standby leaves a key purged within a lease of its
// holder's last renewal to that holder, which takes it again at its next
// renewal, and says so once; a release still hands it over at once.
func TestStandbyLeavesAPurgedLeaseToItsHolder(t *testing.T) {
	const ttl = 8 * time.Second
	ns := testenv.NATSServer(t, &server.Options{})
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	warned := purgeWarnings{seen: make(chan string, 1)}
	q, err := queue.New(ctx, nc, queue.Options{LeaseTTL: ttl, Logger: slog.New(warned)})
	if err != nil {
		t.Fatal(err)
	}
	// The bucket as an older API makes it, with markers.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: queue.HostsBucket, TTL: ttl,
		LimitMarkerTTL: ttl, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	a, err := q.AcquireLease(ctx, "p1", "A", nil)
	if err != nil {
		t.Fatal(err)
	}
	waiting, bTook := standbyLease(ctx, q, "p1", "B")
	<-waiting
	// The standby's watch is in place once its consumer exists.
	hosts, err := js.Stream(ctx, "KV_"+queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	for {
		info, err := hosts.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Consumers > 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the standby never watched the lease")
		case <-time.After(20 * time.Millisecond):
		}
	}
	// The holder renews every quarter second for two seconds, so that
	// the standby's watch sees renewals long before its periodic try (a
	// lease after it began to wait) and the key cannot expire first: a
	// stall of the loaded machine would have to last six seconds to move
	// either past the other (one renewal at half a lease failed one run
	// in sixty under load: decisions.md, hM9).
	for range 8 {
		time.Sleep(ttl / 32)
		if _, err := a.Renew(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Another host's worker purges the bucket through a key of its own.
	m := nats.NewMsg("$KV." + queue.HostsBucket + ".info.p2")
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupAll)
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	if holder, err := q.LeaseHolder(ctx, "p1"); err != nil || holder != "" {
		t.Fatalf("the lease after the purge names %q (%v), want none", holder, err)
	}
	select {
	case b := <-bTook:
		t.Fatalf("the standby took the lease its live holder renewed before the purge (%v)", b.err)
	case <-warned.seen:
	}
	if retaken, err := a.Renew(ctx); err != nil || !retaken {
		t.Fatalf("the holder's renewal after the purge: retaken %v, %v; want the key taken again", retaken, err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	b := <-bTook
	if b.err != nil {
		t.Fatal(b.err)
	}
	if b.l.Freed() != "released" {
		t.Fatalf("the standby found the lease free by %q, want on its holder's release", b.l.Freed())
	}
}

// tookLease is what a standby's AcquireLease returned.
type tookLease struct {
	l   *queue.Lease
	err error
}

// standbyLease asks for host's lease as instance in the background: waiting
// is closed once it waits as a standby (behind a holder), took gets what
// AcquireLease returned.
func standbyLease(ctx context.Context, q *queue.Queue, host, instance string) (waiting <-chan struct{}, took <-chan tookLease) {
	w, t := make(chan struct{}), make(chan tookLease, 1)
	var once sync.Once
	go func() {
		l, err := q.AcquireLease(ctx, host, instance, func(string) { once.Do(func() { close(w) }) })
		t <- tookLease{l, err}
	}()
	return w, t
}
