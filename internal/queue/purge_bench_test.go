package queue_test

import (
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// jsRequests counts the JetStream API requests made on a server, by kind
// (CONSUMER.INFO, CONSUMER.LIST, STREAM.PURGE, …), from a subscription of
// its own to $JS.API.>. Counts are read after sync.
type jsRequests struct {
	nc   *nats.Conn
	ch   chan *nats.Msg
	all  atomic.Int64
	kind [8]struct {
		prefix string
		n      atomic.Int64
	}
}

var jsKinds = []string{"CONSUMER.INFO.", "CONSUMER.LIST.", "STREAM.PURGE.", "STREAM.INFO.", "STREAM.MSG.GET.", "DIRECT.GET."}

func countJSRequests(tb testing.TB, url string) *jsRequests {
	tb.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	c := &jsRequests{nc: nc, ch: make(chan *nats.Msg, 1<<17)}
	for i, k := range jsKinds {
		c.kind[i].prefix = "$JS.API." + k
	}
	_, err = nc.ChanSubscribe("$JS.API.>", c.ch)
	if err == nil {
		_, err = nc.ChanSubscribe(syncSubject+".>", c.ch)
	}
	if err == nil {
		err = nc.Flush()
	}
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// syncSubject is where a connection whose requests are counted marks
// the end of them (sync).
const syncSubject = "jsrequests.sync"

// sync counts every request that the connections from made before now,
// and every one the server routed here before now: each of from sends a
// marker after its requests, and the server hands one connection's
// messages on in the order it read them, so once the marker is here the
// requests before it are. A flush of the counter's own connection alone
// did not wait for them: the server hands a request to JetStream and to
// this subscription in either order, and on a loaded machine JetStream's
// answer came first and a purge went uncounted.
func (c *jsRequests) sync(tb testing.TB, from ...*nats.Conn) {
	tb.Helper()
	markers := map[string]bool{}
	for _, src := range from {
		marker := syncSubject + "." + nats.NewInbox()[len(nats.InboxPrefix):]
		markers[marker] = true
		if err := src.Publish(marker, nil); err != nil {
			tb.Fatal(err)
		}
		if err := src.Flush(); err != nil {
			tb.Fatal(err)
		}
	}
	deadline := time.After(30 * time.Second)
	for len(markers) > 0 {
		select {
		case m := <-c.ch:
			delete(markers, m.Subject)
			c.count(m)
		case <-deadline:
			tb.Fatalf("%d markers of the counted connections not seen in 30 s", len(markers))
		}
	}
	if err := c.nc.Flush(); err != nil {
		tb.Fatal(err)
	}
	for {
		select {
		case m := <-c.ch:
			c.count(m)
		default:
			return
		}
	}
}

// count counts m, a JetStream API request (a marker is none).
func (c *jsRequests) count(m *nats.Msg) {
	if strings.HasPrefix(m.Subject, syncSubject+".") {
		return
	}
	c.all.Add(1)
	for i := range jsKinds {
		if strings.HasPrefix(m.Subject, c.kind[i].prefix) {
			c.kind[i].n.Add(1)
		}
	}
}

// of returns the count of one kind (a jsKinds entry).
func (c *jsRequests) of(kind string) int64 {
	for i, k := range jsKinds {
		if k == kind {
			return c.kind[i].n.Load()
		}
	}
	panic("no such kind " + kind)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runOrders publishes one order to each of hosts and acknowledges it, as
// a worker that ran it would.
func runOrders(tb testing.TB, q *queue.Queue, consumers map[string]jetstream.Consumer, hosts []string) {
	tb.Helper()
	ctx := testenv.Context(tb)
	for _, h := range hosts {
		if _, err := q.Publish(ctx, h, uuid.Must(uuid.NewV7())); err != nil {
			tb.Fatal(err)
		}
	}
	for _, h := range hosts {
		batch, err := consumers[h].Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			tb.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			if err := m.DoubleAck(ctx); err != nil {
				tb.Fatal(err)
			}
			n++
		}
		if n != 1 {
			tb.Fatalf("host %s: %d messages fetched, want 1", h, n)
		}
	}
}

// BenchmarkPurgeAckedRound: what one PurgeAcked round costs with N host
// consumers, each of which ran an order before the first round, when
// `active` of them ran one more since the last round (the rest ran
// nothing): JetStream API requests (by kind), hosts purged, bytes the
// queue's connection received and sent, and the process's CPU time
// (client and the embedded nats-server, as in serve with its embedded
// NATS). The rounds follow each other as in serve, each after the orders
// published since the last. Figures in docs/benchmarks.md, "The orders
// stream's purge at many hosts".
func BenchmarkPurgeAckedRound(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		for _, active := range []int{0, 10} {
			b.Run(fmt.Sprintf("hosts=%d/active=%d", n, active), func(b *testing.B) {
				benchPurgeRound(b, queue.Options{AckWait: time.Minute}, n, active)
			})
		}
	}
}

func benchPurgeRound(b *testing.B, opts queue.Options, n, active int) {
	url := testenv.NATS(b)
	nc, err := queue.Connect(url, "purge-bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	ctx := testenv.Context(b)
	q, err := queue.New(ctx, nc, opts)
	if err != nil {
		b.Fatal(err)
	}
	hosts := make([]string, n)
	consumers := map[string]jetstream.Consumer{}
	for i := range hosts {
		hosts[i] = fmt.Sprintf("bench-%05d", i)
		c, err := q.HostConsumer(ctx, hosts[i])
		if err != nil {
			b.Fatal(err)
		}
		consumers[hosts[i]] = c
	}
	runOrders(b, q, consumers, hosts)
	if _, err := q.PurgeAcked(ctx); err != nil { // the first round at start
		b.Fatal(err)
	}
	// One round as every later one, untimed: the first round after the one
	// at start differs (before 2026-12-04 it purged every host again).
	runOrders(b, q, consumers, hosts[:active])
	if _, err := q.PurgeAcked(ctx); err != nil {
		b.Fatal(err)
	}
	reqs := countJSRequests(b, url)
	var hostsPurged, requests, infos, lists, purges, inBytes, outBytes int64
	var cpu time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		busy := make([]string, active)
		for j := range busy {
			busy[j] = hosts[(i*active+j)%n]
		}
		runOrders(b, q, consumers, busy)
		reqs.sync(b, nc)
		r0, i0, l0, p0 := reqs.all.Load(), reqs.of("CONSUMER.INFO."), reqs.of("CONSUMER.LIST."), reqs.of("STREAM.PURGE.")
		st0 := nc.Stats()
		c0 := cpuTime()
		b.StartTimer()
		purged, err := q.PurgeAcked(ctx)
		b.StopTimer()
		cpu += cpuTime() - c0
		st1 := nc.Stats()
		reqs.sync(b, nc)
		if err != nil {
			b.Fatal(err)
		}
		hostsPurged += int64(purged)
		requests += reqs.all.Load() - r0
		infos += reqs.of("CONSUMER.INFO.") - i0
		lists += reqs.of("CONSUMER.LIST.") - l0
		purges += reqs.of("STREAM.PURGE.") - p0
		inBytes += int64(st1.InBytes - st0.InBytes)
		outBytes += int64(st1.OutBytes - st0.OutBytes)
		b.StartTimer()
	}
	b.StopTimer()
	per := func(v int64) float64 { return float64(v) / float64(b.N) }
	b.ReportMetric(per(hostsPurged), "hosts-purged/op")
	b.ReportMetric(per(requests), "requests/op")
	b.ReportMetric(per(infos), "consumer-infos/op")
	b.ReportMetric(per(lists), "consumer-lists/op")
	b.ReportMetric(per(purges), "purges/op")
	b.ReportMetric(per(inBytes), "in-B/op")
	b.ReportMetric(per(outBytes), "out-B/op")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
}

// BenchmarkPurgeAckedStart: the first round of an API replica that
// (re)starts beside a fleet whose acknowledged orders are already purged:
// it reads every consumer, and finds nothing to purge.
func BenchmarkPurgeAckedStart(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("hosts=%d", n), func(b *testing.B) {
			url := testenv.NATS(b)
			ctx := testenv.Context(b)
			open := func() (*queue.Queue, *nats.Conn) {
				nc, err := queue.Connect(url, "purge-bench")
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(nc.Close)
				q, err := queue.New(ctx, nc, queue.Options{AckWait: time.Minute})
				if err != nil {
					b.Fatal(err)
				}
				return q, nc
			}
			q, _ := open()
			hosts := make([]string, n)
			consumers := map[string]jetstream.Consumer{}
			for i := range hosts {
				hosts[i] = fmt.Sprintf("bench-%05d", i)
				c, err := q.HostConsumer(ctx, hosts[i])
				if err != nil {
					b.Fatal(err)
				}
				consumers[hosts[i]] = c
			}
			runOrders(b, q, consumers, hosts)
			if _, err := q.PurgeAcked(ctx); err != nil {
				b.Fatal(err)
			}
			reqs := countJSRequests(b, url)
			var requests, purges, inBytes int64
			var cpu time.Duration
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				r, nc := open()
				reqs.sync(b, nc)
				r0, p0 := reqs.all.Load(), reqs.of("STREAM.PURGE.")
				st0 := nc.Stats()
				c0 := cpuTime()
				b.StartTimer()
				_, err := r.PurgeAcked(ctx)
				b.StopTimer()
				cpu += cpuTime() - c0
				if err != nil {
					b.Fatal(err)
				}
				reqs.sync(b, nc)
				requests += reqs.all.Load() - r0
				purges += reqs.of("STREAM.PURGE.") - p0
				inBytes += int64(nc.Stats().InBytes - st0.InBytes)
				nc.Close()
				b.StartTimer()
			}
			b.StopTimer()
			per := func(v int64) float64 { return float64(v) / float64(b.N) }
			b.ReportMetric(per(requests), "requests/op")
			b.ReportMetric(per(purges), "purges/op")
			b.ReportMetric(per(inBytes), "in-B/op")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}
