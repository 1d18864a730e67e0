package worker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
	"github.com/orderly-run/orderly/worker/executor"
	"github.com/orderly-run/orderly/worker/hostpolicy"
)

// probeSQL records, for every write of an order's row past its submission
// and every process record, the transaction and whether its commit waits
// for the WAL's flush (synchronous_commit as the writing statement saw it).
const probeSQL = `
CREATE TABLE probe_writes (xid xid8 NOT NULL, sync text NOT NULL, tbl text NOT NULL, order_id uuid NOT NULL, status text);
CREATE FUNCTION probe_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO probe_writes VALUES (pg_current_xact_id(), current_setting('synchronous_commit'), 'orders', NEW.id, NEW.status::text);
	RETURN NULL;
END $$;
CREATE FUNCTION probe_process() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO probe_writes VALUES (pg_current_xact_id(), current_setting('synchronous_commit'), 'order_processes', NEW.order_id, NULL);
	RETURN NULL;
END $$;
CREATE TRIGGER probe_order AFTER UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION probe_order();
CREATE TRIGGER probe_process AFTER INSERT ON order_processes FOR EACH ROW EXECUTE FUNCTION probe_process();`

// newDurableEnv is newEnv on a database whose sessions commit as a
// production one does, waiting for the WAL's flush (the test cluster's
// default is off), with probeSQL's record of the writes.
func newDurableEnv(t *testing.T) (*env, *pgxpool.Pool) {
	return newDurableEnvAckWait(t, time.Second)
}

// newDurableEnvAckWait is newDurableEnv with the host consumers' ack wait
// at ackWait (see newEnvAckWait).
func newDurableEnvAckWait(t *testing.T, ackWait time.Duration) (*env, *pgxpool.Pool) {
	dsn := testenv.Postgres(t)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), "ALTER DATABASE "+pgx.Identifier{cfg.Database}.Sanitize()+" SET synchronous_commit = on"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(t.Context(), probeSQL); err != nil {
		t.Fatal(err)
	}
	store, pool := testenv.Store(t, dsn)
	q := testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: ackWait, LeaseTTL: 2 * time.Second})
	return &env{t: t, store: store, q: q}, pool
}

// TestOneFlushedCommitPerOrderRun: a worker makes one commit per order
// that waits for the WAL's flush besides the claim, the result's. The
// process record of a command done within RecordWait is written in the
// result's transaction; that of a command still running then commits on
// its own, visible before the command ends, without waiting for the
// flush when it names the order's cgroup (a successor ends the cgroup by
// its name even if a crash of PostgreSQL lost the record), waiting for it
// when the order's processes are a session only the record names
// (worker.cgroup off: host recg).
func TestOneFlushedCommitPerOrderRun(t *testing.T) {
	e, pool := newDurableEnv(t)
	ctx := t.Context()
	gate := filepath.Join(t.TempDir(), "gate")
	var quick []uuid.UUID
	for range 5 {
		quick = append(quick, e.submit("recq", "true"))
	}
	held := e.submit("rech", "sh", "-c", `while [ ! -e "$1" ]; do sleep 0.01; done`, "_", gate)
	heldGroup := e.submit("recg", "sh", "-c", `while [ ! -e "$1" ]; do sleep 0.01; done`, "_", gate)
	// A RecordWait of a minute makes certain that each true is done
	// within it; the held order's command runs until the gate opens, past
	// the default RecordWait of its host's worker.
	runWorker(t, worker.Options{Host: "recq", Heartbeat: 200 * time.Millisecond, AckWait: time.Minute,
		ShutdownGrace: 5 * time.Second, RecordWait: time.Minute}, e.store, e.q, testenv.Logger(t))
	runWorker(t, worker.Options{Host: "rech", Heartbeat: 200 * time.Millisecond, AckWait: time.Minute,
		ShutdownGrace: 5 * time.Second}, e.store, e.q, testenv.Logger(t))
	runWorkerPolicy(t, worker.Options{Host: "recg", Heartbeat: 200 * time.Millisecond, AckWait: time.Minute,
		ShutdownGrace: 5 * time.Second}, e.store, e.q, groupPolicy(t), testenv.Logger(t))

	for _, id := range quick {
		e.waitStatus(id, order.StatusSucceeded)
	}
	// Their records are in PostgreSQL while they run.
	testenv.WaitUntil(t, 30*time.Second, "the held orders' process records", func() bool {
		p, err := e.store.ProcessOf(ctx, held, 1)
		pg, errg := e.store.ProcessOf(ctx, heldGroup, 1)
		return err == nil && p != nil && errg == nil && pg != nil
	})
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(held, order.StatusSucceeded)
	e.waitStatus(heldGroup, order.StatusSucceeded)

	for _, id := range append(quick, held, heldGroup) {
		// The flushed commits that wrote the order's row after its
		// submission or its process record: the claim and the result
		// (one transaction for a pipelined result and the next claim).
		// A record on its own commits without the flush when it names
		// the order's cgroup, and with it when the order's processes are
		// found through the record alone (a session).
		var flushed int
		var recordSync string
		var withResult, dated, cgroup bool
		err := pool.QueryRow(ctx, `SELECT
			(SELECT count(DISTINCT xid) FROM probe_writes WHERE order_id = $1 AND sync = 'on'),
			(SELECT sync FROM probe_writes WHERE order_id = $1 AND tbl = 'order_processes'),
			(SELECT cgroup <> '' FROM order_processes WHERE order_id = $1),
			EXISTS (SELECT 1 FROM probe_writes p JOIN probe_writes r USING (xid)
				WHERE p.order_id = $1 AND p.tbl = 'order_processes' AND r.order_id = $1 AND r.status = 'succeeded'),
			(SELECT o.started_at <= p.started_at AND p.started_at <= o.finished_at
				FROM orders o JOIN order_processes p ON p.order_id = o.id WHERE o.id = $1)`,
			id).Scan(&flushed, &recordSync, &cgroup, &withResult, &dated)
		if err != nil {
			t.Fatal(err)
		}
		quickOne := id != held && id != heldGroup
		wantFlushed, wantSync := 2, "off"
		if !quickOne && !cgroup {
			wantFlushed, wantSync = 3, "on"
		}
		if flushed != wantFlushed || withResult != quickOne || (!quickOne && recordSync != wantSync) || !dated {
			t.Errorf("order %s (quick %v, cgroup %v): %d flushed commits, record with the result %v, record's synchronous_commit %q, dated within the run %v; want %d, %v, %s when on its own, and within",
				id, quickOne, cgroup, flushed, withResult, recordSync, dated, wantFlushed, quickOne, wantSync)
		}
	}
}

// TestWorkerStoppedBeforeAQuickOrdersResult: the worker stops (as if
// killed) after a command done within RecordWait ran and before its
// result commit, in both containment modes. What the command left
// running was ended by the worker before it stopped, and the order ran
// once and never again. In a cgroup of its own its process record was
// to go with the result: nothing was recorded of it, and the successor
// marks it interrupted with process_recorded false. With process groups
// only (off, or auto where no cgroup can be made), the leader left a child of its session alive at its exit: its
// record was committed before anything else, as for an order still
// running (TestWorkerKilledAfterAQuickLeadersExit), and the successor
// finds it.
func TestWorkerStoppedBeforeAQuickOrdersResult(t *testing.T) {
	for _, mode := range []string{executor.CgroupAuto, executor.CgroupOff} {
		t.Run("cgroup "+mode, func(t *testing.T) {
			e := newEnv(t)
			cfg := config.Default().Worker
			cfg.Cgroup = mode
			hp, err := hostpolicy.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			host := "fpq" + strings.ReplaceAll(mode, "off", "o")
			dir := t.TempDir()
			count, child := filepath.Join(dir, "count"), filepath.Join(dir, "child")
			id := e.submit(host, "sh", "-c", `echo x >> "$1"; sleep 300 & echo $! > "$2"`, "_", count, child)
			// auto gives process groups only where no cgroup can be made.
			withResult := hp.OrderCgroup(id) != ""
			var recorded error
			_, done := runWorkerPolicy(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
				ShutdownGrace: 5 * time.Second, RecordWait: time.Minute, FailPoint: func(p string, o *order.Order) error {
					if p != "after_exec" || o.ID != id {
						return nil
					}
					// The command ran; its record goes with the result,
					// or was committed before its child was ended.
					if p, err := e.store.ProcessOf(context.Background(), id, 1); err != nil || (p == nil) != withResult {
						recorded = errors.Join(err, fmt.Errorf("the process record committed before the result: %v, want %v", p != nil, !withResult))
					}
					return errCrash
				}}, e.store, e.q, hp, testenv.Logger(t))
			if err := <-done; !errors.Is(err, errCrash) {
				t.Fatalf("worker stopped with %v", err)
			}
			if recorded != nil {
				t.Fatal(recorded)
			}
			b, err := os.ReadFile(child)
			if err != nil {
				t.Fatal(err)
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatal(err)
			}
			if state := processState(pid); state != "" && state != "Z" && state != "X" {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				t.Fatalf("the order's child %d outlived its worker's stop (state %s)", pid, state)
			}

			next := e.submit(host, "true")
			runWorkerPolicy(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
				ShutdownGrace: 5 * time.Second}, e.store, e.q, hp, testenv.Logger(t))
			e.waitStatus(id, order.StatusInterrupted)
			e.waitStatus(next, order.StatusSucceeded)
			data, _ := os.ReadFile(count)
			if n := strings.Count(string(data), "x"); n != 1 {
				t.Fatalf("ran %d times, want 1", n)
			}
			evs, err := e.store.Events(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			var types []string
			for _, ev := range evs {
				types = append(types, ev.Type)
			}
			if strings.Join(types, ",") != "submitted,started,interrupted,reaped" {
				t.Fatalf("events = %v", types)
			}
			if reaped := evs[len(evs)-1].Detail; reaped["process_recorded"] != !withResult {
				t.Fatalf("reaped evidence = %v, want process_recorded %v", reaped, !withResult)
			}
		})
	}
}

// processState is the state letter of pid in /proc/<pid>/stat, "" when
// there is no such process.
func processState(pid int) string {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// startsSeen is a Runner around the real executor that notes, for each
// order's cgroup name (the group-only orders' under ""), how long the
// worker asked the executor to wait for the leader's exit and whether
// OnStart was told it had exited.
type startsSeen struct {
	worker.Runner
	mu   sync.Mutex
	seen map[string]startSeen
}

type startSeen struct {
	exitWait time.Duration
	exited   bool
}

func (s *startsSeen) Run(ctx context.Context, req executor.Request, signals <-chan syscall.Signal) executor.Result {
	onStart := req.OnStart
	req.OnStart = func(p executor.Process, exited bool) error {
		s.mu.Lock()
		s.seen[req.CgroupName] = startSeen{exitWait: req.ExitWait, exited: exited}
		s.mu.Unlock()
		return onStart(p, exited)
	}
	return s.Runner.Run(ctx, req, signals)
}

func (s *startsSeen) of(cgroup string) (startSeen, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.seen[cgroup]
	return v, ok
}

// TestOrderCgroupRecordWait: an order in a cgroup of its own gives its
// leader cgroupRecordWait (100 ms), not RecordWait (10 ms), to exit before
// its process record is committed on its own: its successor finds it by
// the cgroup's name with or without a record. Each leader waits on a FIFO
// the test opens: one exits after the wait, once the test has seen its
// record committed on its own (synchronous_commit off, in a transaction
// of its own); one exits within it (RecordWait lengthened to a minute,
// which makes that certain) and has its record written with its result.
// An order of a host with process groups only is given RecordWait.
// Without root and a writable cgroup2 mount it skips, but under CI=true
// it fails.
func TestOrderCgroupRecordWait(t *testing.T) {
	parent := testCgroupParent(t)
	e, pool := newDurableEnv(t)
	ctx := t.Context()
	logger := testenv.Logger(t)
	cfg := config.Default().Worker
	cfg.Cgroup = parent
	hp, err := hostpolicy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runner := &startsSeen{Runner: executor.New(logger), seen: map[string]startSeen{}}
	opts := worker.Options{Heartbeat: 200 * time.Millisecond, AckWait: time.Minute, ShutdownGrace: 5 * time.Second}
	after, within, groups := opts, opts, opts
	after.Host, within.Host, groups.Host = "cgwait", "cgwithin", "cgwaitg"
	within.RecordWait = time.Minute
	runWorkerRunner(t, after, e.store, e.q, hp, runner, logger)
	runWorkerRunner(t, within, e.store, e.q, hp, runner, logger)
	runWorkerRunner(t, groups, e.store, e.q, groupPolicy(t), runner, logger)

	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fifo := func(name string) string {
		p := filepath.Join(dir, name)
		if err := syscall.Mkfifo(p, 0o666); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// open lets the leader waiting on p go: the open waits for its
	// reader, the leader's.
	open := func(p string) {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.WriteString("go\n")
		if err := errors.Join(err, f.Close()); err != nil {
			t.Fatal(err)
		}
	}
	const wait = `read x < "$1"`
	late, early := fifo("late"), fifo("early")
	lateID := e.submit("cgwait", "sh", "-c", wait, "_", late)
	earlyID := e.submit("cgwithin", "sh", "-c", wait, "_", early)
	groupID := e.submit("cgwaitg", "true")

	testenv.WaitUntil(t, 30*time.Second, "the late leader's record, committed while it waits", func() bool {
		p, err := e.store.ProcessOf(ctx, lateID, 1)
		return err == nil && p != nil
	})
	open(late)
	open(early)
	for _, id := range []uuid.UUID{lateID, earlyID, groupID} {
		e.waitStatus(id, order.StatusSucceeded)
	}

	for _, tt := range []struct {
		id         uuid.UUID
		cgroup     string
		exitWait   time.Duration
		withResult bool
	}{
		{lateID, "order-" + lateID.String(), 100 * time.Millisecond, false},
		{earlyID, "order-" + earlyID.String(), time.Minute, true},
	} {
		seen, ok := runner.of(tt.cgroup)
		if !ok || seen.exitWait != tt.exitWait || seen.exited != tt.withResult {
			t.Errorf("order %s: the executor was asked to wait %v for the leader and told it exited %v (seen %v); want %v and %v",
				tt.id, seen.exitWait, seen.exited, ok, tt.exitWait, tt.withResult)
		}
		var withResult bool
		var recordSync, cgroup string
		err := pool.QueryRow(ctx, `SELECT
			(SELECT sync FROM probe_writes WHERE order_id = $1 AND tbl = 'order_processes'),
			EXISTS (SELECT 1 FROM probe_writes p JOIN probe_writes r USING (xid)
				WHERE p.order_id = $1 AND p.tbl = 'order_processes' AND r.order_id = $1 AND r.status = 'succeeded'),
			(SELECT cgroup FROM order_processes WHERE order_id = $1)`, tt.id).Scan(&recordSync, &withResult, &cgroup)
		if err != nil {
			t.Fatal(err)
		}
		if withResult != tt.withResult || (!tt.withResult && recordSync != "off") || filepath.Base(cgroup) != tt.cgroup {
			t.Errorf("order %s: record with the result %v, its synchronous_commit %q, its cgroup %q; want %v, off when on its own, %s",
				tt.id, withResult, recordSync, cgroup, tt.withResult, tt.cgroup)
		}
	}
	if seen, ok := runner.of(""); !ok || seen.exitWait != 10*time.Millisecond {
		t.Errorf("the group-only order %s: the executor was asked to wait %v for its leader (seen %v); want RecordWait's 10ms", groupID, seen.exitWait, ok)
	}
}
