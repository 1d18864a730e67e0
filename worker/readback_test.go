package worker_test

import (
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// endCatcher waits, in the worker's process, for the ends of the orders
// in awaited (queue.OwnEndHearer, as serve's API does), and keeps the
// committed order each end came with.
type endCatcher struct {
	mu        sync.Mutex
	awaited   map[uuid.UUID]bool
	committed map[uuid.UUID]*order.Order
	heard     map[uuid.UUID]bool
}

func (c *endCatcher) AwaitsEnd(_ string, id uuid.UUID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.awaited[id]
}

func (c *endCatcher) HearEnd(subject string, _ []byte, committed *order.Order) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.awaited {
		if subject == queue.EventSubjectOf("rb-1", id) {
			c.heard[id] = true
			if committed != nil {
				c.committed[id] = committed
			}
		}
	}
}

// TestReadBackIsTheOrderAsStored runs orders of several shapes through a
// real worker whose process waits for their ends (as serve's API does),
// connected as orderly's own role and as the documented orderly_worker
// login of one host (which must be allowed to read back what it writes),
// some alone and some queued behind each other (the result written with
// the next order's claim). The order each end carries is the row as a
// read of PostgreSQL gives it afterwards, field for field (times at
// PostgreSQL's microseconds, env, stdin and an action's secrets erased by
// the result's trigger); one whose outputs reach the lean bound carries
// none, nor does an order nobody in the process waits for.
func TestReadBackIsTheOrderAsStored(t *testing.T) {
	for _, role := range []string{"owner", "orderly_worker of one host"} {
		t.Run(role, func(t *testing.T) {
			const host = "rb-1"
			dsn := testenv.Postgres(t)
			admin, pool := testenv.Store(t, dsn)
			ws := admin
			if role != "owner" {
				ws, _ = workerRole(t, pool, dsn, host)
			}
			e := &env{t: t, store: admin, q: testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})}
			c := &endCatcher{awaited: map[uuid.UUID]bool{}, committed: map[uuid.UUID]*order.Order{}, heard: map[uuid.UUID]bool{}}
			e.q.HearOwnEnds(c)
			shapes := []*order.Order{
				{Command: "true"},
				{Command: "sh", Args: []string{"-c", "echo out; echo err >&2; exit 4"}},
				{Command: "sh", Args: []string{"-c", `echo "$FOO"; cat`}, Env: map[string]string{"FOO": "bar"}, EnvNames: []string{"FOO"},
					Stdin: []byte("from stdin")},
				{Command: "sh", Args: []string{"-c", `printf '\377'; sleep 3`}, Timeout: time.Second},
				{Command: "no-such-command-hg30"},
				{Command: "sh", Args: []string{"-c", `head -c 70000 /dev/zero`}}, // past the lean bound: not read back
				{Command: "echo", Args: []string{"nobody waits"}},                // not awaited: not read back
			}
			var ids []uuid.UUID
			for i, o := range shapes {
				o.ID, o.Host, o.Principal, o.Source, o.Kind = order.NewID(), host, "test", "rest", order.KindExec
				if o.Timeout == 0 {
					o.Timeout = 20 * time.Second
				}
				o.CaptureStdout, o.CaptureStderr = true, true
				if i < len(shapes)-1 {
					c.mu.Lock()
					c.awaited[o.ID] = true
					c.mu.Unlock()
				}
				if _, err := admin.InsertOrder(t.Context(), o); err != nil {
					t.Fatal(err)
				}
				if _, err := e.q.Publish(t.Context(), host, o.ID); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, o.ID)
			}
			runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
				ShutdownGrace: 5 * time.Second}, ws, e.q, testenv.Logger(t))
			for _, id := range ids {
				stored := e.waitTerminal(id)
				testenv.WaitUntil(t, 10*time.Second, "the end heard", func() bool {
					c.mu.Lock()
					defer c.mu.Unlock()
					return c.heard[id] || !c.awaited[id]
				})
				c.mu.Lock()
				got := c.committed[id]
				c.mu.Unlock()
				r := stored.Result
				small := r != nil && r.Stdout.Bytes+r.Stderr.Bytes < postgres.LeaveOutputsFrom
				switch {
				case id == ids[len(ids)-1] || !small:
					if got != nil {
						t.Errorf("order %s (%s) was read back: awaited %v, outputs %d+%d bytes", id, stored.Command, c.awaited[id], r.Stdout.Bytes, r.Stderr.Bytes)
					}
				case got == nil:
					t.Errorf("order %s (%s, %s) was not read back", id, stored.Command, stored.Status)
				case !reflect.DeepEqual(got, stored):
					t.Errorf("order %s read back as\n%+v\nstored as\n%+v", id, got, stored)
				}
			}
		})
	}
}

// waitTerminal waits for order id to end, and returns it as GetOrder
// reads it.
func (e *env) waitTerminal(id uuid.UUID) *order.Order {
	e.t.Helper()
	var o *order.Order
	testenv.WaitUntil(e.t, 30*time.Second, "order "+id.String()+" ended", func() bool {
		var err error
		o, err = e.store.GetOrder(e.t.Context(), id)
		return err == nil && o.Status.Terminal()
	})
	return o
}
