package worker_test

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// refusedResults is the real store, counting the result writes of one
// order that PostgreSQL refused as unavailable.
type refusedResults struct {
	worker.Store
	id      uuid.UUID
	refused atomic.Int64
}

func (s *refusedResults) count(id uuid.UUID, err error) error {
	if id == s.id && order.ErrorCode(err) == order.CodeUnavailable {
		s.refused.Add(1)
	}
	return err
}

func (s *refusedResults) Complete(ctx context.Context, id uuid.UUID, attempt int, f postgres.Finish) error {
	return s.count(id, s.Store.Complete(ctx, id, attempt, f))
}

func (s *refusedResults) CompleteAndClaim(ctx context.Context, id uuid.UUID, attempt int, f postgres.Finish,
	nextID uuid.UUID, w string, nextSeq uint64) (postgres.Step, error) {
	step, err := s.Store.CompleteAndClaim(ctx, id, attempt, f, nextID, w, nextSeq)
	return step, s.count(id, err)
}

// TestResultWrittenOnceTheDiskHasRoom: PostgreSQL's disk is full when an
// order's result (2 MB of output that does not compress) must be
// written: the table cannot grow (SQLSTATE 53100) and the write is
// refused. The worker retries it in place; once there is room the result
// is written, once, and the next order runs. The WAL is switched to a
// fresh segment before the disk fills, so that it has room (this test
// is about a table that cannot grow): a WAL that
// cannot grow stops PostgreSQL, which the fault suite's probe covers
// (docs/reliability.md, "A full disk").
func TestResultWrittenOnceTheDiskHasRoom(t *testing.T) {
	ctx := testenv.Context(t)
	dir, dsn := testenv.PostgresOnTmpfs(t)
	store, pool := testenv.Store(t, dsn)
	e := &env{t: t, store: store, q: testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})}
	id := order.NewID()
	rs := &refusedResults{Store: store, id: id}
	runWorker(t, worker.Options{Host: "pgfull", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, rs, e.q, testenv.Logger(t))
	e.waitStatus(e.submit("pgfull", "true"), order.StatusSucceeded)

	gate := filepath.Join(t.TempDir(), "gate")
	e.insertAndPublish(&order.Order{ID: id, Kind: order.KindExec, Host: "pgfull", Command: "sh",
		Args:    []string{"-c", `while [ ! -e "$1" ]; do sleep 0.05; done; head -c 2000000 /dev/urandom`, "_", gate},
		Timeout: 60 * time.Second, Principal: "test", Source: "rest", CaptureStdout: true, CaptureStderr: true,
		MaxOutput: 4 << 20})
	testenv.WaitUntil(t, 30*time.Second, "the order's process on record", func() bool {
		p, err := store.ProcessOf(ctx, id, 1)
		return err == nil && p != nil
	})
	// A fresh WAL segment, made by the checkpoint's record: 16 MB of
	// room for the result's WAL.
	for _, stmt := range []string{"SELECT pg_switch_wal()", "CHECKPOINT"} {
		if _, err := pool.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	fill := testenv.FillDisk(t, dir)
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, 30*time.Second, "a result write refused", func() bool { return rs.refused.Load() > 0 })
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	o := statusAcrossCrashes(t, store, id, order.StatusSucceeded)
	if o.Attempt != 1 || o.Result == nil || o.Result.Stdout.Bytes != 2000000 {
		t.Fatalf("attempt %d, result %+v; want attempt 1 and 2000000 bytes of output", o.Attempt, o.Result)
	}
	statusAcrossCrashes(t, store, e.submit("pgfull", "true"), order.StatusSucceeded)
	t.Logf("result writes refused while the disk was full: %d", rs.refused.Load())
}
