package worker_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/metrics"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
	"github.com/orderly-run/orderly/worker/executor"
	"github.com/orderly-run/orderly/worker/hostpolicy"
)

// slowAckWait is the production default: a recovery that waits for an ack
// timer would take this long, so the tests below bound recovery well under it.
const slowAckWait = 30 * time.Second

// recoveryBound is how fast a successor must have run the orders a dead
// worker held, in these tests.
const recoveryBound = 10 * time.Second

// startWith runs a worker for host on q with store, like env.start, with
// the production ack wait.
func (e *env) startWith(q *queue.Queue, store worker.Store, host string, fp func(string, *order.Order) error) <-chan error {
	_, done := runWorker(e.t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: slowAckWait,
		ShutdownGrace: 5 * time.Second, FailPoint: fp}, store, q, testenv.Logger(e.t))
	return done
}

// slowQueue is a Queue whose host consumers have the production ack wait.
func (e *env) slowQueue() *queue.Queue {
	q, err := queue.New(e.t.Context(), e.q.Conn(), queue.Options{AckWait: slowAckWait, LeaseTTL: 2 * time.Second})
	if err != nil {
		e.t.Fatal(err)
	}
	return q
}

// TestSuccessorRunsHeldOrdersAtOnceInOrder: a worker dies while it holds
// the next order (pipelining). Its successor interrupts the dead attempt
// and runs the held order and the rest at once and in stream order, not
// after the 30 s ack timer of the held message.
func TestSuccessorRunsHeldOrdersAtOnceInOrder(t *testing.T) {
	e := newEnv(t)
	q := e.slowQueue()
	dir := t.TempDir()
	first := e.submit("held", "sleep", "0.3") // the next message is held while it runs
	var rest []uuid.UUID
	for _, name := range []string{"a", "b", "c"} {
		rest = append(rest, e.submit("held", "touch", filepath.Join(dir, name)))
	}
	done := e.startWith(q, e.store, "held", func(p string, o *order.Order) error {
		if p == "after_exec" && o.ID == first {
			return errCrash
		}
		return nil
	})
	if err := <-done; !errors.Is(err, errCrash) {
		t.Fatalf("worker stopped with %v", err)
	}
	crashed := time.Now()
	e.startWith(q, e.store, "held", nil)
	e.waitStatus(first, order.StatusInterrupted)
	var prev *order.Order
	for _, id := range rest {
		o := e.waitStatus(id, order.StatusSucceeded)
		if prev != nil && (o.StreamSeq <= prev.StreamSeq || o.StartedAt.Before(*prev.FinishedAt)) {
			t.Fatalf("order %s (seq %d) ran before %s (seq %d) finished", o.ID, o.StreamSeq, prev.ID, prev.StreamSeq)
		}
		prev = o
	}
	if took := prev.FinishedAt.Sub(crashed); took > recoveryBound {
		t.Fatalf("the held orders ran %v after the crash: the successor waited for an ack timer", took)
	}
}

// lostAnswer is a Store whose first CompleteAndClaim commits but reports
// an error, as when the connection drops after the server committed.
type lostAnswer struct {
	*postgres.Store
	lost atomic.Bool
}

func (s *lostAnswer) CompleteAndClaim(ctx context.Context, id uuid.UUID, attempt int, f postgres.Finish,
	nextID uuid.UUID, w string, nextSeq uint64) (postgres.Step, error) {
	step, err := s.Store.CompleteAndClaim(ctx, id, attempt, f, nextID, w, nextSeq)
	if err == nil && s.lost.CompareAndSwap(false, true) {
		return postgres.Step{}, errors.New("unexpected EOF")
	}
	return step, err
}

// TestAmbiguousCommitRunsTheClaimedOrder: the combined "finish N, claim
// N+1" commits but the worker never hears so. It reads back what happened:
// N is recorded once, N+1 — claimed by this very worker and never started —
// runs; it is not interrupted, and the host goes on.
func TestAmbiguousCommitRunsTheClaimedOrder(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	first := e.submit("ambig", "sleep", "0.3")
	second := e.submit("ambig", "sh", "-c", `echo x >> "$1"`, "_", filepath.Join(dir, "second"))
	third := e.submit("ambig", "true")
	store := &lostAnswer{Store: e.store}
	e.startWith(e.slowQueue(), store, "ambig", nil)
	e.waitStatus(first, order.StatusSucceeded)
	e.waitStatus(second, order.StatusSucceeded)
	e.waitStatus(third, order.StatusSucceeded)
	if !store.lost.Load() {
		t.Fatal("the answer of the pipelined commit was never lost: nothing was tested")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "second")); string(b) != "x\n" {
		t.Fatalf("second ran %q, want once", b)
	}
}

// lostRecord is a Store whose first RecordProcess commits but reports an
// error, as when the connection drops after the server committed.
type lostRecord struct {
	*postgres.Store
	lost atomic.Bool
}

func (s *lostRecord) RecordProcess(ctx context.Context, id uuid.UUID, attempt int, w string, p postgres.Process) error {
	err := s.Store.RecordProcess(ctx, id, attempt, w, p)
	if err == nil && s.lost.CompareAndSwap(false, true) {
		return errors.New("unexpected EOF")
	}
	return err
}

// TestLostProcessRecordAnswerKeepsTheOrder: the record of an order's
// process commits but the worker never hears so. Its retry is the same
// record, not a lost fence: the order runs to its end. It was killed at
// once and recorded failed, "aborted at start: … no longer the host's
// owner", by the host's only worker.
func TestLostProcessRecordAnswerKeepsTheOrder(t *testing.T) {
	e := newEnv(t)
	marker := filepath.Join(t.TempDir(), "done")
	id := e.submit("lostrec", "sh", "-c", `sleep 0.2; touch "$1"`, "_", marker)
	store := &lostRecord{Store: e.store}
	e.startWith(e.slowQueue(), store, "lostrec", nil)
	o := e.waitStatus(id, order.StatusSucceeded)
	if !store.lost.Load() {
		t.Fatal("the answer of the process record was never lost: nothing was tested")
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("the order did not run to its end: %v", err)
	}
	if p, err := e.store.ProcessOf(t.Context(), id, o.Attempt); err != nil || p == nil {
		t.Fatalf("the attempt's process record: %+v, %v", p, err)
	}
}

// TestFenceRefusesFormerOwner: once another worker took the host over in
// PostgreSQL, the former owner can neither claim an order of it nor record
// a process for an attempt it claimed before.
func TestFenceRefusesFormerOwner(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	early := e.submit("fence", "true")
	late := e.submit("fence", "true")
	if _, _, err := e.store.TakeHost(ctx, "fence", "test", postgres.Owner{Instance: "old"}); err != nil {
		t.Fatal(err)
	}
	o, claimed, err := e.store.Claim(ctx, early, "old", 1)
	if err != nil || !claimed {
		t.Fatalf("owner's claim: claimed %v, %v", claimed, err)
	}
	prev, _, err := e.store.TakeHost(ctx, "fence", "test", postgres.Owner{Instance: "new"})
	if err != nil || prev.Instance != "old" {
		t.Fatalf("take over: previous %q, %v", prev.Instance, err)
	}
	if _, claimed, err := e.store.Claim(ctx, late, "old", 2); claimed || !errors.Is(err, postgres.ErrNotOwner) {
		t.Fatalf("former owner's claim: claimed %v, err %v; want ErrNotOwner", claimed, err)
	}
	// The successor settles the attempt; the former owner's process record
	// for it is refused (it then kills what it started).
	if ok, err := e.store.InterruptAttempt(ctx, early, o.Attempt, "new", "test", nil); !ok || err != nil {
		t.Fatalf("interrupt: %v %v", ok, err)
	}
	err = e.store.RecordProcess(ctx, early, o.Attempt, "old", postgres.Process{PID: 1, PGID: 1, BootID: "b"})
	if !errors.Is(err, postgres.ErrNotOwner) {
		t.Fatalf("former owner's process record: %v, want ErrNotOwner", err)
	}
	if _, claimed, err := e.store.Claim(ctx, late, "new", 2); !claimed || err != nil {
		t.Fatalf("new owner's claim: claimed %v, %v", claimed, err)
	}
}

// TestWorkerTakesHostAgainAfterLosingLease: a worker whose lease was taken
// (as after a NATS restart, when the key expired and another instance won
// it) does not sit idle: it waits as a standby and takes the host again
// once the lease is free, then runs what was queued meanwhile.
func TestWorkerTakesHostAgainAfterLosingLease(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	_, done := e.start("relost", nil)
	e.waitStatus(e.submit("relost", "true"), order.StatusSucceeded)

	kv, err := e.q.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "lease.relost"); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "lease.relost", []byte("rival")); err != nil {
		t.Fatal(err)
	}
	// The worker must notice at its next renewal and never overwrite the
	// rival's key: watch a few heartbeats.
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		got, err := kv.Get(ctx, "lease.relost")
		if err != nil {
			t.Fatal(err)
		}
		if string(got.Value()) != "rival" {
			t.Fatalf("the worker overwrote a rival's lease: %q", got.Value())
		}
	}
	queued := e.submit("relost", "true")
	if err := kv.Delete(ctx, "lease.relost"); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(queued, order.StatusSucceeded)
	select {
	case err := <-done:
		t.Fatalf("worker stopped: %v", err)
	default:
	}
}

// TestExpiredOrderNeverStarts: an order whose deadline passed while it was
// queued is expired by the worker without being claimed: no started_at, no
// "started" event, nothing run.
func TestExpiredOrderNeverStarts(t *testing.T) {
	e := newEnv(t)
	marker := filepath.Join(t.TempDir(), "ran")
	past := time.Now().Add(-time.Second)
	o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "late", Command: "touch", Args: []string{marker},
		Timeout: 20 * time.Second, Principal: "test", Source: "rest", ExpiresAt: &past}
	if _, err := e.store.InsertOrder(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	if _, err := e.q.Publish(t.Context(), "late", o.ID); err != nil {
		t.Fatal(err)
	}
	next := e.submit("late", "true")
	e.start("late", nil)
	got := e.waitStatus(o.ID, order.StatusExpired)
	e.waitStatus(next, order.StatusSucceeded)
	if got.StartedAt != nil {
		t.Fatalf("expired order shows started_at %v", got.StartedAt)
	}
	evs, err := e.store.Events(t.Context(), o.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Type == "started" {
			t.Fatal("expired order has a started event")
		}
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatal("the expired order ran")
	}
}

// TestIdempotentOrderRequeuedOnce: an idempotent order whose worker died
// mid-attempt runs once more, in its place, on the successor; a second
// loss makes it interrupted.
func TestIdempotentOrderRequeuedOnce(t *testing.T) {
	e := newEnv(t)
	f := filepath.Join(t.TempDir(), "count")
	o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "idem", Command: "sh",
		Args: []string{"-c", `echo x >> "$1"`, "_", f}, Idempotent: true,
		Timeout: 20 * time.Second, Principal: "test", Source: "rest"}
	if _, err := e.store.InsertOrder(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	if _, err := e.q.Publish(t.Context(), "idem", o.ID); err != nil {
		t.Fatal(err)
	}
	after := e.submit("idem", "true")
	crashOn := func(attempt int) func(string, *order.Order) error {
		return func(p string, got *order.Order) error {
			if p == "after_exec" && got.ID == o.ID && got.Attempt == attempt {
				return errCrash
			}
			return nil
		}
	}
	_, done := e.start("idem", crashOn(1))
	if err := <-done; !errors.Is(err, errCrash) {
		t.Fatalf("worker stopped with %v", err)
	}
	e.start("idem", nil)
	got := e.waitStatus(o.ID, order.StatusSucceeded)
	e.waitStatus(after, order.StatusSucceeded)
	if got.Attempt != 2 {
		t.Fatalf("attempt = %d, want 2", got.Attempt)
	}
	if b, _ := os.ReadFile(f); string(b) != "x\nx\n" {
		t.Fatalf("ran %q: want the lost attempt and the requeued one", b)
	}
	if after2 := e.waitStatus(after, order.StatusSucceeded); after2.StartedAt.Before(*got.FinishedAt) {
		t.Fatal("the order after the requeued one ran first")
	}
}

// TestGracefulStopKeepsTheHostUntilTheOrderEnds: a worker asked to stop
// lets its running order finish; it keeps its lease meanwhile, so a
// standby does not take the host over (and kill the order) before then.
func TestGracefulStopKeepsTheHostUntilTheOrderEnds(t *testing.T) {
	e := newEnv(t)
	marker := filepath.Join(t.TempDir(), "done")
	long := e.submit("graceful", "sh", "-c", `sleep 3; touch "$1"`, "_", marker) // longer than the 2 s lease TTL
	stop1, _ := e.start("graceful", nil)
	// Started, not only claimed: a stop between the claim and the start
	// hands the order back, and the standby runs it.
	e.waitStarted(long)
	e.start("graceful", nil) // the standby
	stopped := make(chan struct{})
	go func() { stop1(); close(stopped) }()
	got := e.waitStatus(long, order.StatusSucceeded)
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("the order did not finish: %v", err)
	}
	<-stopped
	next := e.waitStatus(e.submit("graceful", "true"), order.StatusSucceeded)
	if next.Worker == got.Worker {
		t.Fatal("the standby did not take over after the stop")
	}
}

// TestShutdownKillSaysWhy: an order still running when the shutdown grace
// passes is killed by the worker, and its result says so: nobody
// cancelled it, and an auditor must be able to tell. The worker says so
// at once too, when the stop begins, naming the order, its grace and
// when it is killed, before the order's end: serve logged "shutting
// down" and then nothing until the grace passed (30 s by default), and
// a second Ctrl-C did not shorten the silence.
func TestShutdownKillSaysWhy(t *testing.T) {
	e := newEnv(t)
	id := e.submit("shutdown-kill", "sleep", "30")
	log := &testenv.LogBuffer{}
	stop, _ := runWorker(t, worker.Options{Host: "shutdown-kill", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 300 * time.Millisecond}, e.store, e.q, testenv.LoggerTo(io.MultiWriter(t.Output(), log)))
	e.waitStarted(id)
	stop()
	o := e.waitStatus(id, order.StatusKilled)
	if o.Result == nil || !strings.Contains(o.Result.Error, "the worker stopped: worker.shutdown_grace (300ms) passed") {
		t.Fatalf("result of the order killed at shutdown: %+v", o.Result)
	}
	// Its log line names the signal, not an exit code of <nil>.
	said, finished := -1, -1
	for i, line := range strings.Split(log.String(), "\n") {
		switch {
		case strings.Contains(line, `msg="order finished"`):
			finished = i
			if strings.Contains(line, "<nil>") || !strings.Contains(line, "signal=SIG") {
				t.Errorf("the killed order's log line: %s", line)
			}
		case strings.Contains(line, `msg="stopping: the running order may finish first`):
			said = i
			for _, want := range []string{"order_id=" + id.String(), "principal=", "command=sleep", "shutdown_grace=300ms", "kill_at="} {
				if !strings.Contains(line, want) {
					t.Errorf("the stop's line lacks %s: %s", want, line)
				}
			}
		}
	}
	if said < 0 || finished < 0 || said > finished {
		t.Errorf("want the stop's line before the order's end (lines %d and %d):\n%s", said, finished, log.String())
	}
}

// stopAfterClaim is a Store that cancels the worker's context right after
// a pipelined claim commits, as a SIGTERM arriving at that moment would.
// With lose set, the commit's answer is lost to the stop: it reports the
// cancellation though the server applied it.
type stopAfterClaim struct {
	*postgres.Store
	stop func()
	lose bool
	once atomic.Bool
}

func (s *stopAfterClaim) CompleteAndClaim(ctx context.Context, id uuid.UUID, attempt int, f postgres.Finish,
	nextID uuid.UUID, w string, nextSeq uint64) (postgres.Step, error) {
	step, err := s.Store.CompleteAndClaim(ctx, id, attempt, f, nextID, w, nextSeq)
	if err == nil && step.Claimed && s.once.CompareAndSwap(false, true) {
		s.stop()
		if s.lose {
			return postgres.Step{}, context.Canceled
		}
	}
	return step, err
}

// TestStopAfterPipelinedClaimHandsTheOrderBack: a worker stopping right
// after it claimed the next order in the previous one's commit knows it
// never started it: it puts it back in the queue instead of leaving it
// running for its successor to interrupt, and the successor runs it.
func TestStopAfterPipelinedClaimHandsTheOrderBack(t *testing.T) {
	testHandBack(t, "handback", func(db *postgres.Store, stop func()) (worker.Store, *atomic.Bool) {
		s := &stopAfterClaim{Store: db, stop: stop}
		return s, &s.once
	})
}

// TestStopDuringPipelinedCommitHandsTheOrderBack: the stop request lands
// while the pipelined commit is in flight and its answer is lost. The
// worker reads the next order back, finds it claimed by itself and never
// started, and hands it back; before, it stopped with it running, and its
// successor interrupted an order that never ran (TestFaultsRestartStorm).
func TestStopDuringPipelinedCommitHandsTheOrderBack(t *testing.T) {
	testHandBack(t, "handback-lost", func(db *postgres.Store, stop func()) (worker.Store, *atomic.Bool) {
		s := &stopAfterClaim{Store: db, stop: stop, lose: true}
		return s, &s.once
	})
}

// testHandBack runs two orders on host with the store wrap makes, which
// stops the worker around the pipelined claim of the second and reports
// whether it did; the second must be queued after the stop, and run once
// by the next worker.
func testHandBack(t *testing.T, host string, wrap func(db *postgres.Store, stop func()) (worker.Store, *atomic.Bool)) {
	e := newEnv(t)
	f := filepath.Join(t.TempDir(), "ran")
	first := e.submit(host, "sleep", "0.3") // the next message is held while it runs
	second := e.submit(host, "sh", "-c", `echo x >> "$1"`, "_", f)
	stopped, err := runToStop(e, host, wrap)
	if err != nil {
		t.Fatal(err)
	}
	if !stopped.Load() {
		t.Fatal("no pipelined claim happened: nothing was tested")
	}
	e.waitStatus(first, order.StatusSucceeded)
	if o, err := e.store.GetOrder(t.Context(), second); err != nil || o.Status != order.StatusQueued {
		t.Fatalf("the claimed, unstarted order after the stop: %v %v, want queued", o.Status, err)
	}
	e.start(host, nil)
	e.waitStatus(second, order.StatusSucceeded)
	if b, _ := os.ReadFile(f); string(b) != "x\n" {
		t.Fatalf("ran %q, want once", b)
	}
}

// claimLostAtStop is a Store whose first claim commits but reports the
// stop's error, as when a SIGTERM cancels the claim after the server
// applied it.
type claimLostAtStop struct {
	*postgres.Store
	stop func()
	once atomic.Bool
}

func (s *claimLostAtStop) Claim(ctx context.Context, id uuid.UUID, w string, seq uint64) (*order.Order, bool, error) {
	o, claimed, err := s.Store.Claim(ctx, id, w, seq)
	if err == nil && claimed && s.once.CompareAndSwap(false, true) {
		s.stop()
		return nil, false, context.Canceled
	}
	return o, claimed, err
}

// TestStopDuringClaimHandsTheOrderBack: the stop request lands while a
// claim's commit is in flight and its answer is lost. The worker reads the
// order back, finds it claimed by itself and never started, and hands it
// back instead of leaving it running for its successor to interrupt.
func TestStopDuringClaimHandsTheOrderBack(t *testing.T) {
	e := newEnv(t)
	f := filepath.Join(t.TempDir(), "ran")
	id := e.submit("claim-lost", "sh", "-c", `echo x >> "$1"`, "_", f)
	// The lost answer ends the tenure with its error.
	stopped, _ := runToStop(e, "claim-lost", func(db *postgres.Store, stop func()) (worker.Store, *atomic.Bool) {
		s := &claimLostAtStop{Store: db, stop: stop}
		return s, &s.once
	})
	if !stopped.Load() {
		t.Fatal("no claim happened: nothing was tested")
	}
	if o, err := e.store.GetOrder(t.Context(), id); err != nil || o.Status != order.StatusQueued {
		t.Fatalf("the claimed, unstarted order after the stop: %v %v, want queued", o.Status, err)
	}
	e.start("claim-lost", nil)
	e.waitStatus(id, order.StatusSucceeded)
	if b, _ := os.ReadFile(f); string(b) != "x\n" {
		t.Fatalf("ran %q, want once", b)
	}
}

// runToStop runs a worker for host on the store wrap makes from e's, which
// stops it (calls stop) at some point of the protocol and reports whether
// it did; it returns that report and the worker's Run error.
func runToStop(e *env, host string, wrap func(db *postgres.Store, stop func()) (worker.Store, *atomic.Bool)) (*atomic.Bool, error) {
	hp, err := hostpolicy.New(config.Default().Worker)
	if err != nil {
		e.t.Fatal(err)
	}
	logger := testenv.Logger(e.t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store, stopped := wrap(e.store, cancel)
	w := worker.New(worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, store, e.q, hp, executor.New(logger), logger)
	return stopped, w.Run(ctx)
}

// TestLeaseFailuresAreCounted: a worker whose heartbeats and renewals NATS
// refuses (here its hosts bucket sealed, as a full disk refuses writes)
// keeps running orders until its lease runs out, logging a warning per
// beat; orderly_worker_lease_failures_total is what an alert can watch.
func TestLeaseFailuresAreCounted(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	m := metrics.New()
	runWorker(t, worker.Options{Host: "sealed", Heartbeat: 100 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second, Metrics: m}, e.store, e.q, testenv.Logger(t))
	e.waitStatus(e.submit("sealed", "true"), order.StatusSucceeded)
	for _, want := range []string{`orderly_worker_lease_failures_total{host="sealed",step="heartbeat"} 0`,
		`orderly_worker_lease_failures_total{host="sealed",step="renew"} 0`} {
		if got := scrape(t, m); !strings.Contains(got, want) {
			t.Fatalf("before: no %s in\n%s", want, got)
		}
	}

	js := e.q.JetStream()
	s, err := js.Stream(ctx, "KV_"+queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.Sealed = true
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	for _, step := range []string{"heartbeat", "renew"} {
		re := regexp.MustCompile(`orderly_worker_lease_failures_total\{host="sealed",step="` + step + `"\} ([0-9]+)`)
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if m := re.FindStringSubmatch(scrape(t, m)); m != nil && m[1] != "0" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s failure counted with the hosts bucket sealed:\n%s", step, scrape(t, m))
			}
		}
	}
}

func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}

// TestCanceledIdempotentOrderIsNotRequeued: an idempotent order whose
// worker died mid-attempt, and whose cancel was requested meanwhile (the
// request recorded, nobody to signal it), is interrupted by the successor,
// not queued to run again: it ran a second time, against the request.
func TestCanceledIdempotentOrderIsNotRequeued(t *testing.T) {
	e := newEnv(t)
	f := filepath.Join(t.TempDir(), "count")
	o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "idemc", Command: "sh",
		Args: []string{"-c", `echo x >> "$1"`, "_", f}, Idempotent: true,
		Timeout: 20 * time.Second, Principal: "test", Source: "rest"}
	if _, err := e.store.InsertOrder(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	if _, err := e.q.Publish(t.Context(), "idemc", o.ID); err != nil {
		t.Fatal(err)
	}
	after := e.submit("idemc", "true")
	_, done := e.start("idemc", func(p string, got *order.Order) error {
		if p == "after_exec" && got.ID == o.ID {
			return errCrash
		}
		return nil
	})
	if err := <-done; !errors.Is(err, errCrash) {
		t.Fatalf("worker stopped with %v", err)
	}
	if st, err := e.store.RequestCancel(t.Context(), o.ID, "alice", "SIGTERM"); err != nil || st != order.StatusRunning {
		t.Fatalf("cancel of the orphaned order: %s, %v", st, err)
	}
	e.start("idemc", nil)
	got := e.waitStatus(o.ID, order.StatusInterrupted)
	e.waitStatus(after, order.StatusSucceeded)
	if got.Attempt != 1 {
		t.Fatalf("attempt = %d, want 1", got.Attempt)
	}
	if b, _ := os.ReadFile(f); string(b) != "x\n" {
		t.Fatalf("ran %q: want the lost attempt only", b)
	}
}

// TestHandedBackOrderHonoursItsCancel: an order claimed by a worker that
// was stopping, canceled then (running: the request is recorded, and the
// wake-up goes to a worker that never started it), and handed back
// unstarted, is signalled as soon as the next worker starts it, not at
// that worker's first heartbeat of the order (a third of the ack wait,
// 10 s in production), by which time a short order had run to its end
// after its cancel was answered as requested.
func TestHandedBackOrderHonoursItsCancel(t *testing.T) {
	e := newEnv(t)
	f := filepath.Join(t.TempDir(), "ran")
	id := e.submit("unclaimc", "sh", "-c", `sleep 1; echo x >> "$1"`, "_", f)
	ctx := t.Context()
	if _, _, err := e.store.TakeHost(ctx, "unclaimc", "test", postgres.Owner{Instance: "old"}); err != nil {
		t.Fatal(err)
	}
	o, claimed, err := e.store.Claim(ctx, id, "old", 1)
	if err != nil || !claimed {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	if st, err := e.store.RequestCancel(ctx, id, "alice", "SIGTERM"); err != nil || st != order.StatusRunning {
		t.Fatalf("cancel of the claimed order: %s, %v", st, err)
	}
	if ok, err := e.store.Unclaim(ctx, id, o.Attempt, "old", "the worker is stopping"); err != nil || !ok {
		t.Fatalf("hand back: %v %v", ok, err)
	}
	e.startWith(e.slowQueue(), e.store, "unclaimc", nil)
	e.waitStatus(id, order.StatusKilled) // as any running order its cancel signals
	if b, err := os.ReadFile(f); err == nil {
		t.Fatalf("the canceled order ran to its end (%q)", b)
	}
}
