package queue_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestLeaseAcquisitionRequestsSentAgainWhenTheConnectionDropsUnderThem:
// a worker taking its host (its start, or a tenure after a nats-server
// restart), whose later reads and takes of the lease key the connection
// loses as it drops (the request, or its answer), sends them again on
// the new connection and holds the lease within the bound it gives the
// acquisition, where each waited it out and failed (docs/decisions.md,
// hF24). The reads: the bucket's stream, read before the take of a key
// the wait honoured no renewal of (lastRevision), the key's last
// message, which tells a release from a delete (goneUnseen), and the key read when
// the take found it there; the take: the take back of the worker's own
// lease, left over by a tenure whose release did not reach the server,
// written once. A real nats-server; the worker's connection through a
// proxy that drops what one side writes, then cuts the connection.
func TestLeaseAcquisitionRequestsSentAgainWhenTheConnectionDropsUnderThem(t *testing.T) {
	const host = "acquired"
	const instance = host + "/acquirer"
	k := queue.NewMarkKey([]byte("the host's seed"))
	key := "lease." + host
	pubAck := []byte(`"stream":"KV_` + queue.HostsBucket + `"`)
	keyRead := []byte("DIRECT.GET.KV_" + queue.HostsBucket + ".$KV." + queue.HostsBucket + "." + key)
	type tcase struct {
		name string
		// released: the key's last message is the worker's release (a
		// tenure that ended cleanly), else its lease left over.
		released bool
		// nth: the request is the nth the worker sends holding sent
		// (0: the first). The acquisition of a key left over reads it
		// twice: its last message (goneUnseen, which finds a value and
		// sends no Create on it: hH24), then the key itself.
		nth int
		// toServer: the request is lost, else its answer; sent is in
		// the request (nil: the take back's, on the left-over lease's
		// revision), lost in what is dropped.
		toServer   bool
		sent, lost []byte
	}
	cases := []tcase{
		{name: "stream read lost", released: true, toServer: true,
			sent: []byte("STREAM.INFO.KV_" + queue.HostsBucket), lost: []byte("STREAM.INFO.KV_" + queue.HostsBucket)},
		{name: "stream read's answer lost", released: true,
			sent: []byte("STREAM.INFO.KV_" + queue.HostsBucket), lost: []byte("stream_info_response")},
		{name: "last message read lost", released: true, toServer: true, sent: keyRead, lost: keyRead},
		{name: "last message read's answer lost", released: true, sent: keyRead, lost: []byte(queue.ReleasedHeader)},
		{name: "key read lost", nth: 2, toServer: true, sent: keyRead, lost: keyRead},
		{name: "key read's answer lost", nth: 2, sent: keyRead, lost: []byte(instance)},
		{name: "take back lost", toServer: true},
		{name: "take back's answer lost", lost: pubAck},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := testenv.Context(t)
			api, px, w := bindThroughProxy(t)
			kv, err := api.JetStream().KeyValue(ctx, queue.HostsBucket)
			if err != nil {
				t.Fatal(err)
			}
			// The lease of an earlier tenure of this very instance.
			old, err := w.AcquireSignedLease(ctx, host, instance, k, nil)
			if err != nil {
				t.Fatal(err)
			}
			if c.released {
				if err := old.Release(ctx); err != nil {
					t.Fatal(err)
				}
			}
			sent := c.sent
			if sent == nil {
				e, err := kv.Get(ctx, key)
				if err != nil {
					t.Fatal(err)
				}
				sent = []byte("Nats-Expected-Last-Subject-Sequence: " + strconv.FormatUint(e.Revision(), 10) + "\r\n")
			}
			lost := c.lost
			if lost == nil {
				lost = sent
			}
			acquireAcrossTheDrop(t, api, px, w, host, instance, k, lost, func() {
				px.DropWhenNth(c.toServer, sent, max(c.nth, 1))
			})
		})
	}
}

// acquireAcrossTheDrop has w take host's lease as instance, signed with
// k, under a bound of 4 s, with drop set on px first; once px dropped
// lost it cuts the connection, and checks that the acquisition held the
// lease, with one write of the hosts bucket, and that its first renewal
// is answered.
func acquireAcrossTheDrop(t *testing.T, api *queue.Queue, px *testenv.CutProxy, w *queue.Queue, host, instance string, k queue.MarkKey, lost []byte, drop func()) {
	t.Helper()
	ctx := testenv.Context(t)
	st, err := api.JetStream().Stream(ctx, "KV_"+queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := info.State.LastSeq

	drop()
	type result struct {
		lease *queue.Lease
		err   error
		took  time.Duration
	}
	done := make(chan result, 1)
	go func() {
		actx, cancel := context.WithTimeout(ctx, 4*time.Second)
		defer cancel()
		start := time.Now()
		l, err := w.AcquireSignedLease(actx, host, instance, k, nil)
		done <- result{l, err, time.Since(start)}
	}()
	testenv.WaitUntil(t, 30*time.Second, "the proxy dropping the request or its answer", func() bool {
		return px.Dropped(lost)
	})
	px.Cut()
	r := <-done
	if r.err != nil {
		t.Fatalf("the acquisition whose request the drop lost: %v after %s, want it sent again and the lease held", r.err, r.took.Round(time.Millisecond))
	}
	t.Logf("held %s after the acquisition began", r.took.Round(time.Millisecond))
	if holder, err := api.LeaseHolder(ctx, host); err != nil || holder != instance {
		t.Fatalf("the lease is held by %q (%v), want %s", holder, err, instance)
	}
	if info, err = st.Info(ctx); err != nil {
		t.Fatal(err)
	}
	if n := info.State.LastSeq - before; n != 1 {
		t.Errorf("the hosts bucket took %d writes for the take, want 1", n)
	}
	if _, err := r.lease.Renew(ctx); err != nil {
		t.Errorf("the first renewal of the lease taken: %v", err)
	}
}
