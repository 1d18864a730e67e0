package natsembed

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
)

// TestRollupOfAHostKeyRefused: a worker may write its own lease,
// heartbeat and standby report in the hosts bucket, and a message has
// headers, which no NATS permission judges: Nats-Rollup: all on one of
// its keys purged the whole bucket. Every other host lost its lease (its
// holder paused its claims until it took the key again at its next
// renewal), its heartbeat (offline in the hosts listing, which reads
// Workers) and its standby's report. The bucket takes no rollups now, and
// what it holds stays.
func TestRollupOfAHostKeyRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	b := startBus(t)
	api := b.connect(t, b.creds.API, queue.APIInbox)
	qAPI, err := queue.New(ctx, api.nc, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hold := func(host, instance string) (*queue.Queue, *queue.Lease, *bool) {
		c := b.connect(t, b.creds.Workers[host], queue.WorkerInbox(host))
		q, err := queue.Bind(ctx, c.nc, queue.Options{})
		if err != nil {
			t.Fatal(err)
		}
		l, err := q.AcquireLease(ctx, host, instance, nil)
		if err != nil {
			t.Fatal(err)
		}
		lapsed := new(bool)
		l.OnLapse(func() { *lapsed = true })
		now := time.Now()
		if err := l.Beat(ctx, queue.HostInfo{Host: host, Instance: instance, StartedAt: now, LastSeen: now}); err != nil {
			t.Fatal(err)
		}
		return q, l, lapsed
	}
	hold("h1", "w1")
	q2, l2, lapsed := hold("h2", "w2")
	now := time.Now()
	if _, err := q2.StandbyBeat(ctx, queue.HostInfo{Host: "h2", Instance: "s2", StartedAt: now, LastSeen: now}); err != nil {
		t.Fatal(err)
	}
	online, standbys, err := qAPI.Workers(ctx)
	if err != nil || len(online) != 2 || standbys["h2"].Instance != "s2" {
		t.Fatalf("before: online %v, standbys %v, %v", online, standbys, err)
	}

	w1 := b.connect(t, b.creds.Workers["h1"], queue.WorkerInbox("h1"))
	var stored []string
	for _, key := range []string{"standby.h1", "info.h1", "lease.h1"} {
		m := nats.NewMsg("$KV." + queue.HostsBucket + "." + key)
		m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupAll)
		m.Data = []byte(`{"host":"h1"}`)
		ack, err := w1.nc.RequestMsgWithContext(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(ack.Data), "rollup not permitted") {
			stored = append(stored, key+": "+string(ack.Data))
		}
	}
	w1.clean(t)

	var lost []string
	online, standbys, err = qAPI.Workers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if online["h2"].Instance != "w2" {
		lost = append(lost, "h2's heartbeat (offline in the hosts listing)")
	}
	if standbys["h2"].Instance != "s2" {
		lost = append(lost, "h2's standby report")
	}
	if holder, err := q2.LeaseHolder(ctx, "h2"); err != nil || holder != "w2" {
		lost = append(lost, "h2's lease (held by "+holder+")")
	}
	retaken, err := l2.Renew(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if *lapsed || retaken {
		lost = append(lost, "h2's holder's tenure (claims paused at its renewal, the key taken again)")
	}
	if len(stored) > 0 || len(lost) > 0 {
		t.Fatalf("worker h1's rollups on its own keys were stored: %q; host h2 lost %q", stored, lost)
	}
}
