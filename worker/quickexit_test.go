package worker_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
	"github.com/orderly-run/orderly/worker/executor"
	"github.com/orderly-run/orderly/worker/hostpolicy"
)

// victimEnv marks the run of the test binary that is the worker killed
// in TestWorkerKilledAfterAQuickLeadersExit: "dsn|nats url|host|order
// id|marker".
const victimEnv = "ORDERLY_WORKER_TEST_VICTIM"

// groupPolicy is the host policy of worker.cgroup off: process groups
// only, whatever the machine offers.
func groupPolicy(t testing.TB) *hostpolicy.Policy {
	cfg := config.Default().Worker
	cfg.Cgroup = executor.CgroupOff
	hp, err := hostpolicy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return hp
}

// TestWorkerKilledAfterAQuickLeadersExit: with process groups only
// (worker.cgroup off), a command whose leader exits at once and leaves a
// child running in its session (`sleep 300 &`), and its worker SIGKILLed
// right after the leader's exit was handed over and before the executor
// ended the rest of the order (the after_start fail point, in a worker
// that is a process of its own). The successor must find the child and
// end it: without a cgroup, only a record names the order's session, so
// a leader that exited within RecordWait has its record written with the
// result only when nothing else of its session is alive. Checked from
// /proc.
func TestWorkerKilledAfterAQuickLeadersExit(t *testing.T) {
	if v := os.Getenv(victimEnv); v != "" {
		runVictimWorker(t, v)
		return
	}
	dsn, natsURL := testenv.Postgres(t), testenv.NATS(t)
	store, _ := testenv.Store(t, dsn)
	q := testenv.Queue(t, natsURL, "test", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})
	e := &env{t: t, store: store, q: q}
	const host = "qexit"
	dir := t.TempDir()
	child, marker := filepath.Join(dir, "child"), filepath.Join(dir, "marker")
	id := e.submit(host, "sh", "-c", `sleep 300 </dev/null >/dev/null 2>&1 & echo $! > "$1"`, "_", child)

	cmd := exec.Command(os.Args[0], "-test.run", "^TestWorkerKilledAfterAQuickLeadersExit$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), victimEnv+"="+strings.Join([]string{dsn, natsURL, host, id.String(), marker}, "|"))
	var out testenv.LogBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	testenv.WaitUntil(t, time.Minute, "the victim worker at after_start", func() bool {
		_, err := os.Stat(marker)
		return err == nil
	})
	b, err := os.ReadFile(child)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	t.Logf("the victim worker:\n%s", out.String())
	if state := processState(pid); state == "" || state == "Z" || state == "X" {
		t.Fatalf("the order's child %d ended with its worker (state %q): nothing to find", pid, state)
	}

	runWorkerPolicy(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, e.store, e.q, groupPolicy(t), testenv.Logger(t))
	e.waitStatus(id, order.StatusInterrupted)
	var reaped postgres.Event
	testenv.WaitUntil(t, 30*time.Second, "the order's reaped event", func() bool {
		evs, err := e.store.Events(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		reaped = evs[len(evs)-1]
		return reaped.Type == "reaped"
	})
	if state := processState(pid); state != "" && state != "Z" && state != "X" {
		t.Fatalf("the order's child %d outlived the takeover (state %s); reaped: %v", pid, state, reaped.Detail)
	}
	if reaped.Detail["process_recorded"] != true || reaped.Detail["verified"] != executor.VerifiedGroup {
		t.Fatalf("reaped evidence %v; want the process recorded, verified by its group", reaped.Detail)
	}
}

// runVictimWorker is the worker TestWorkerKilledAfterAQuickLeadersExit
// kills: a worker of the host with process groups only, which stops for
// good at after_start of the order, after it writes the marker.
func runVictimWorker(t *testing.T, v string) {
	f := strings.Split(v, "|")
	if len(f) != 5 {
		t.Fatalf("%s=%q", victimEnv, v)
	}
	dsn, natsURL, host, marker := f[0], f[1], f[2], f[4]
	id, err := uuid.Parse(f[3])
	if err != nil {
		t.Fatal(err)
	}
	store, _ := testenv.Store(t, dsn)
	q := testenv.Queue(t, natsURL, "test", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})
	stopped := make(chan struct{})
	// A RecordWait of a minute makes certain that the leader's exit is
	// handed over as such.
	_, done := runWorkerPolicy(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second, RecordWait: time.Minute, FailPoint: func(p string, o *order.Order) error {
			if p != "after_start" || o.ID != id {
				return nil
			}
			if err := os.WriteFile(marker, nil, 0o644); err != nil {
				t.Error(err)
			}
			<-stopped // until the SIGKILL
			return nil
		}}, store, q, groupPolicy(t), testenv.Logger(t))
	err = <-done
	close(stopped)
	t.Fatalf("the victim worker stopped with %v before its kill", err)
}
