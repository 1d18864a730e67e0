package worker_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// crashAt is the real store, except that at one point of one order (its
// claim, its process record or its result) PostgreSQL crashes: a backend
// is killed with SIGKILL, so the postmaster ends every session and runs
// crash recovery. before: the crash comes before the statement, which
// meets a server that is gone or recovering; after: the statement
// commits, then the crash takes its answer.
type crashAt struct {
	worker.Store
	t      *testing.T
	dsn    string
	point  string
	after  bool
	id     uuid.UUID
	struck atomic.Bool
	// gate is made when the order's process record is written: the
	// order's command waits for it, so that its record goes on its own
	// (a command done within the worker's RecordWait has it written
	// with the result).
	gate string
}

var errAnswerLost = errors.New("read unix: connection reset by peer (PostgreSQL crashed)")

func (s *crashAt) at(point string, id uuid.UUID, stmt func() error) error {
	if point != s.point || id != s.id || !s.struck.CompareAndSwap(false, true) {
		return stmt()
	}
	if !s.after {
		crashPostgres(s.t, s.dsn)
		return stmt()
	}
	if err := stmt(); err != nil {
		s.t.Errorf("%s before the crash: %v", point, err)
	}
	crashPostgres(s.t, s.dsn)
	return errAnswerLost
}

func (s *crashAt) Claim(ctx context.Context, id uuid.UUID, w string, seq uint64) (o *order.Order, claimed bool, err error) {
	err = s.at("claim", id, func() error {
		o, claimed, err = s.Store.Claim(ctx, id, w, seq)
		return err
	})
	return o, claimed, err
}

func (s *crashAt) RecordProcess(ctx context.Context, id uuid.UUID, attempt int, w string, p postgres.Process) error {
	if id == s.id {
		if err := os.WriteFile(s.gate, nil, 0o644); err != nil {
			s.t.Error(err)
		}
	}
	return s.at("record", id, func() error { return s.Store.RecordProcess(ctx, id, attempt, w, p) })
}

func (s *crashAt) Complete(ctx context.Context, id uuid.UUID, attempt int, f postgres.Finish) error {
	return s.at("result", id, func() error { return s.Store.Complete(ctx, id, attempt, f) })
}

func (s *crashAt) CompleteAndClaim(ctx context.Context, id uuid.UUID, attempt int, f postgres.Finish,
	nextID uuid.UUID, w string, nextSeq uint64) (step postgres.Step, err error) {
	err = s.at("result", id, func() error {
		step, err = s.Store.CompleteAndClaim(ctx, id, attempt, f, nextID, w, nextSeq)
		return err
	})
	return step, err
}

// crashPostgres kills a backend of the cluster with SIGKILL: the
// postmaster then ends every other session and runs crash recovery.
func crashPostgres(t *testing.T, dsn string) {
	t.Helper()
	ctx := testenv.Context(t)
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	err = c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.Close(ctx)
}

// statusAcrossCrashes waits for order id to be want, reading it again
// when a crash took the connection.
func statusAcrossCrashes(t *testing.T, store *postgres.Store, id uuid.UUID, want order.Status) *order.Order {
	t.Helper()
	var o *order.Order
	testenv.WaitUntil(t, 30*time.Second, "order "+id.String()+" to be "+string(want), func() bool {
		var err error
		o, err = store.GetOrder(t.Context(), id)
		if err != nil && order.ErrorCode(err) != order.CodeUnavailable {
			t.Fatal(err)
		}
		if err == nil && o.Status.Terminal() && o.Status != want {
			t.Fatalf("order %s is %s, want %s", id, o.Status, want)
		}
		return err == nil && o.Status == want
	})
	return o
}

// TestPostgresCrashAtEachStepOfAnOrder: PostgreSQL crashes (a backend
// killed, crash recovery) at an order's claim, its process record and
// its result, before the statement and after its commit (the answer
// lost). The worker retries each in place: the order runs once, attempt
// 1, and succeeds; the order behind it runs after it.
func TestPostgresCrashAtEachStepOfAnOrder(t *testing.T) {
	// Commits durable, as on any server orderly runs against: the test
	// cluster commits asynchronously, and its crash would take the last
	// commits with it.
	dsn := testenv.Postgres(t) + "&synchronous_commit=on"
	store, _ := testenv.Store(t, dsn)
	e := &env{t: t, store: store, q: testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})}
	for _, point := range []string{"claim", "record", "result"} {
		for _, after := range []bool{false, true} {
			name := point + "/before"
			if after {
				name = point + "/after"
			}
			t.Run(name, func(t *testing.T) {
				host := "crash-" + point
				if after {
					host += "-after"
				}
				dir := t.TempDir()
				ran := filepath.Join(dir, "ran")
				cs := &crashAt{Store: e.store, t: t, dsn: dsn, point: point, after: after, gate: filepath.Join(dir, "recorded")}
				o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: host, Command: "sh",
					Args:    []string{"-c", `echo x >> "$1"; while [ ! -e "$2" ]; do sleep 0.01; done`, "_", ran, cs.gate},
					Timeout: 20 * time.Second, Principal: "test", Source: "rest"}
				cs.id = o.ID
				stop, _ := runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
					ShutdownGrace: 5 * time.Second}, cs, e.q, testenv.Logger(t))
				defer stop()
				// Both recorded before the worker sees either: the crash
				// ends the test's sessions too.
				next := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: host, Command: "true",
					Timeout: 20 * time.Second, Principal: "test", Source: "rest"}
				for _, o := range []*order.Order{o, next} {
					if _, err := e.store.InsertOrder(t.Context(), o); err != nil {
						t.Fatal(err)
					}
				}
				for _, o := range []*order.Order{o, next} {
					if _, err := e.q.Publish(t.Context(), host, o.ID); err != nil {
						t.Fatal(err)
					}
				}
				got := statusAcrossCrashes(t, e.store, o.ID, order.StatusSucceeded)
				if got.Attempt != 1 {
					t.Errorf("attempt %d, want 1", got.Attempt)
				}
				statusAcrossCrashes(t, e.store, next.ID, order.StatusSucceeded)
				if !cs.struck.Load() {
					t.Fatalf("PostgreSQL was not crashed at the %s", point)
				}
				if data, _ := os.ReadFile(ran); string(data) != "x\n" {
					t.Fatalf("the order ran %q, want once", data)
				}
			})
		}
	}
}
