package worker_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestNATSRestartLosesTheConsumerNotTheOrders: nats-server restarts
// (its store kept) while the worker runs an order and holds the next, two
// more waiting. The host's consumer kept its state in memory (queue's
// hostConsumerConfig), so the restart loses it: the worker's ack is not
// confirmed, and once idle it finds the consumer gone and creates it again
// at the first message still stored. Every order runs once, in the order
// submitted, and one submitted after the restart runs too.
func TestNATSRestartLosesTheConsumerNotTheOrders(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	e, wq, connected := newEnvOn(t, ns)
	log := filepath.Join(t.TempDir(), "ran")
	appendName := func(name string) uuid.UUID {
		return e.submit("nrestart", "sh", "-c", `echo "$1" >> "$2"`, "_", name, log)
	}
	first := e.submit("nrestart", "sleep", "2")
	ids := []uuid.UUID{first, appendName("a"), appendName("b"), appendName("c")}
	e.startWith(wq, e.store, "nrestart", nil)
	e.waitStatus(first, order.StatusRunning)

	testenv.NATSServerRestarted(t, ns)
	testenv.WaitUntil(t, 30*time.Second, "both clients reconnect", func() bool {
		return connected()
	})
	// The path under test: the restart lost the consumer, not the stream.
	err := testenv.Answered(t, "the host consumer's lookup", func(ctx context.Context) error {
		_, err := e.q.JetStream().Consumer(ctx, queue.OrdersStream, queue.ConsumerName("nrestart"))
		return err
	})
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("the host's consumer after the restart: %v, want it gone with the server's memory", err)
	}
	ids = append(ids, appendName("d"))

	var prev *order.Order
	for _, id := range ids {
		o := e.waitStatus(id, order.StatusSucceeded)
		if o.Attempt != 1 {
			t.Errorf("order %s ran in attempt %d", id, o.Attempt)
		}
		if prev != nil && (o.StreamSeq <= prev.StreamSeq || o.StartedAt.Before(*prev.FinishedAt)) {
			t.Fatalf("order %s (seq %d) ran before %s (seq %d) finished", o.ID, o.StreamSeq, prev.ID, prev.StreamSeq)
		}
		prev = o
	}
	if b, _ := os.ReadFile(log); string(b) != "a\nb\nc\nd\n" {
		t.Fatalf("the orders ran %q, want a, b, c, d once each in order", b)
	}
	c, err := e.q.JetStream().Consumer(t.Context(), queue.OrdersStream, queue.ConsumerName("nrestart"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.CachedInfo().Config.MemoryStorage {
		t.Error("the consumer created again keeps its state on disk")
	}
}

// TestNATSRestartRedeliversFinishedOrdersOnlyToAckThem: the orders stream
// has limits retention, so orders acknowledged before a nats-server
// restart are still stored (nothing purges them here, as no API runs);
// the restart loses the in-memory consumer and the worker creates it
// again at the first message stored. Those finished orders are delivered
// again and only acknowledged (PostgreSQL shows them finished): each order
// runs once, in the order submitted, before and after the restart.
func TestNATSRestartRedeliversFinishedOrdersOnlyToAckThem(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	e, wq, connected := newEnvOn(t, ns)
	log := filepath.Join(t.TempDir(), "ran")
	appendName := func(name string) uuid.UUID {
		return e.submit("lrestart", "sh", "-c", `echo "$1" >> "$2"`, "_", name, log)
	}
	ids := []uuid.UUID{appendName("a"), appendName("b")}
	e.startWith(wq, e.store, "lrestart", nil)
	for _, id := range ids {
		e.waitStatus(id, order.StatusSucceeded)
	}
	st, err := e.q.JetStream().Stream(t.Context(), queue.OrdersStream)
	if err != nil {
		t.Fatal(err)
	}
	if r := st.CachedInfo().Config.Retention; r != jetstream.LimitsPolicy {
		t.Fatalf("orders stream retention %v, want limits on a single server", r)
	}
	testenv.WaitUntil(t, 30*time.Second, "the acks of a and b", func() bool {
		c, err := e.q.JetStream().Consumer(t.Context(), queue.OrdersStream, queue.ConsumerName("lrestart"))
		return err == nil && c.CachedInfo().NumAckPending == 0
	})

	testenv.NATSServerRestarted(t, ns)
	testenv.WaitUntil(t, 30*time.Second, "both clients reconnect", func() bool {
		return connected()
	})
	var info *jetstream.StreamInfo
	if err := testenv.Answered(t, "the orders stream's info", func(ctx context.Context) (err error) {
		info, err = st.Info(ctx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("the stream holds %d messages after the restart, want a's and b's, acknowledged", info.State.Msgs)
	}
	ids = append(ids, appendName("c"), appendName("d"))

	var prev *order.Order
	for _, id := range ids {
		o := e.waitStatus(id, order.StatusSucceeded)
		if o.Attempt != 1 {
			t.Errorf("order %s ran in attempt %d", id, o.Attempt)
		}
		if prev != nil && (o.StreamSeq <= prev.StreamSeq || o.StartedAt.Before(*prev.FinishedAt)) {
			t.Fatalf("order %s (seq %d) ran before %s (seq %d) finished", o.ID, o.StreamSeq, prev.ID, prev.StreamSeq)
		}
		prev = o
	}
	testenv.WaitUntil(t, 10*time.Second, "every message acknowledged", func() bool {
		c, err := e.q.JetStream().Consumer(t.Context(), queue.OrdersStream, queue.ConsumerName("lrestart"))
		return err == nil && c.CachedInfo().NumAckPending == 0 && c.CachedInfo().NumPending == 0
	})
	if b, _ := os.ReadFile(log); string(b) != "a\nb\nc\nd\n" {
		t.Fatalf("the orders ran %q, want a, b, c, d once each in order", b)
	}
}

// TestNATSRestartRecreatesTheConsumerAtOnce: nats-server restarts (its store
// kept, the host's consumer lost with its memory) while the worker is idle,
// or while it runs an order. The worker checks its consumer at the
// reconnect, or as soon as it is idle again, not at its stall check's next
// ticks: with those a minute apart here, the host's next order still runs
// within seconds. It used to wait for two ticks (4 s by default, four
// minutes here, past waitStatus's deadline).
func TestNATSRestartRecreatesTheConsumerAtOnce(t *testing.T) {
	for _, busy := range []bool{false, true} {
		name := "idle"
		if busy {
			name = "busy"
		}
		t.Run(name, func(t *testing.T) {
			ns := testenv.NATSServer(t, &server.Options{})
			e, wq, connected := newEnvOn(t, ns)
			runWorker(t, worker.Options{Host: "reborn", Heartbeat: 200 * time.Millisecond, AckWait: slowAckWait,
				ShutdownGrace: 5 * time.Second, StallCheckEvery: time.Minute}, e.store, wq, testenv.Logger(t))
			e.waitStatus(e.submit("reborn", "true"), order.StatusSucceeded)
			if busy {
				e.waitStatus(e.submit("reborn", "sleep", "1"), order.StatusRunning)
			}

			testenv.NATSServerRestarted(t, ns)
			testenv.WaitUntil(t, 30*time.Second, "both clients reconnect", func() bool {
				return connected()
			})
			// Timed from a JetStream that answers (not from a request
			// sent while it could not).
			if err := testenv.Answered(t, "the orders stream's lookup", func(ctx context.Context) error {
				_, err := e.q.JetStream().Stream(ctx, queue.OrdersStream)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			submitted := time.Now()
			e.waitStatus(e.submit("reborn", "true"), order.StatusSucceeded)
			took := time.Since(submitted)
			t.Logf("the order submitted after the restart ran %s later", took.Round(time.Millisecond))
			if took > 15*time.Second {
				t.Errorf("the order submitted after the restart ran %s later, want well under the stall check's minute", took)
			}
		})
	}
}

// TestNATSRestartsRetakeTheHostAtTheFloorAfterARenewal: nats-server is
// restarted five times, each once the worker consumes again. Each
// restart loses the host's consumer and ends the tenure. A tenure whose
// lease was renewed while it consumed proved NATS and PostgreSQL sound:
// the worker takes the host again after the backoff's floor, 100 ms,
// every time. The wait was reset only after a tenure of a minute: it
// doubled at each restart, 0.1, 0.2, 0.4, 0.8, 1.6 s, each restart
// costing the host's orders that much more (docs/decisions.md, hB23).
// A tenure that ends before its first renewal (a server that drops
// every connection soon after it is made) still doubles it, up to 2 s:
// the worker does not take the host over and over against it.
func TestNATSRestartsRetakeTheHostAtTheFloorAfterARenewal(t *testing.T) {
	for _, c := range []struct {
		name string
		// heartbeat and lease: the worker's renewals; renewed: each
		// restart waits for a renewal while the worker consumes, else
		// it comes as soon as it consumes, a renewal interval early.
		heartbeat, lease time.Duration
		renewed          bool
		want             func(restart int) time.Duration
	}{
		{"renewed between restarts", 200 * time.Millisecond, 2 * time.Second, true,
			func(int) time.Duration { return 100 * time.Millisecond }},
		{"restarted before a renewal", 10 * time.Second, 30 * time.Second, false,
			func(i int) time.Duration { return min(100*time.Millisecond<<i, 2*time.Second) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			const host = "restarted"
			ns := testenv.NATSServer(t, &server.Options{})
			e, _, _ := newEnvOn(t, ns)
			if _, err := queue.New(t.Context(), e.q.Conn(), queue.Options{AckWait: time.Second, LeaseTTL: c.lease}); err != nil {
				t.Fatal(err)
			}
			wc, err := queue.Connect(ns.ClientURL(), "worker")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(wc.Close)
			wq, err := queue.Bind(t.Context(), wc, queue.Options{AckWait: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			var logs testenv.LogBuffer
			runWorker(t, worker.Options{Host: host, Heartbeat: c.heartbeat, AckWait: slowAckWait,
				ShutdownGrace: 5 * time.Second}, e.store, wq, testenv.LoggerTo(io.MultiWriter(&logs, t.Output())))
			// The lease key's revision, 0 while it cannot be read.
			leaseRev := func() uint64 {
				ctx, cancel := context.WithTimeout(t.Context(), time.Second)
				defer cancel()
				kv, err := e.q.JetStream().KeyValue(ctx, queue.HostsBucket)
				if err != nil {
					return 0
				}
				en, err := kv.Get(ctx, "lease."+host)
				if err != nil {
					return 0
				}
				return en.Revision()
			}
			retake := regexp.MustCompile(`stopped consuming the host's orders; taking the host again.* retry_in=(\S+)`)
			const restarts = 5
			for i := range restarts {
				testenv.WaitUntil(t, 30*time.Second, "the worker consuming again", func() bool {
					return strings.Count(logs.String(), "worker consuming") > i
				})
				if c.renewed {
					var rev uint64
					testenv.WaitUntil(t, 30*time.Second, "the lease's revision read", func() bool {
						rev = leaseRev()
						return rev != 0
					})
					testenv.WaitUntil(t, 30*time.Second, "a renewal of the lease while the worker consumes", func() bool {
						return leaseRev() > rev
					})
				}
				ns = testenv.NATSServerRestarted(t, ns)
				testenv.WaitUntil(t, 30*time.Second, "the tenure ended by the restart", func() bool {
					return len(retake.FindAllString(logs.String(), -1)) > i
				})
			}
			for i, m := range retake.FindAllStringSubmatch(logs.String(), -1) {
				if want := c.want(i).String(); m[1] != want {
					t.Errorf("restart %d: the host taken again after %s, want %s", i+1, m[1], want)
				}
			}
			e.waitStatus(e.submit(host, "true"), order.StatusSucceeded)
		})
	}
}
