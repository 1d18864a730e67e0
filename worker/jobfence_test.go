package worker_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
	"github.com/orderly-run/orderly/worker/hostpolicy"
)

// userManagerInner marks the test process that runs inside the private
// mount namespace, beside a real systemd user manager.
const userManagerInner = "ORDERLY_WORKER_USER_MANAGER"

// markManager is a user manager (testenv.UserManagerScript) with the
// harmless template unit mark@.service: each start writes "S <instance>"
// to $HOME/marker, so the marker is systemd's own count of its starts.
var markManager = testenv.UserManagerScript(`printf '%s\n' '[Unit]' 'Description=orderly worker test %i' '[Service]' \
	'ExecStartPre=/bin/sh -c "echo S %i >> %h/marker"' 'ExecStart=/bin/sleep infinity' \
	> "$HOME/.config/systemd/user/mark@.service"`)

// onMarkManager runs the test again beside markManager's user manager and
// reports whether the caller is that inner run and must do the test.
func onMarkManager(t *testing.T) bool {
	t.Helper()
	if os.Getenv(userManagerInner) == "1" {
		return true
	}
	testenv.NeedRootTools(t, "a systemd user manager", "scripts/ensure-dbus.sh",
		"unshare", "dbus-daemon", "systemctl", "/lib/systemd/systemd")
	testenv.RerunInMountNamespace(t, markManager, nil, t.Name(), userManagerInner)
	return false
}

// TestFrozenWorkerQueuesNoJobAfterTakeover stops the worker of a systemd
// action (restart mark@f1) at a point of its fence, past its lease,
// while a standby of the host waits: the standby takes the host and
// records the run interrupted, and then the worker goes on.
//   - job_fenced: stopped just after PostgreSQL answered that the run is
//     still its own (OwnsAttempt), before its D-Bus call: hA11's window.
//     It must queue nothing: its lease, last renewed more than a lease
//     ago by its monotonic clock, refuses the dispatch. Before, it
//     restarted the unit of a run recorded interrupted, and nothing said
//     so.
//   - before_job: stopped after every check, just before the call: the
//     few instructions no check covers. The job is queued (systemd
//     starts the unit) and the order's history says so: a
//     job_after_takeover event of the stale worker with the job's id.
//
// "Stopped" is the worker's goroutine held in a FailPoint while its NATS
// connection is closed: no renewal reaches the server, as from a process
// under SIGSTOP, and the lease expires.
func TestFrozenWorkerQueuesNoJobAfterTakeover(t *testing.T) {
	for _, point := range []string{"job_fenced", "before_job"} {
		t.Run(point, func(t *testing.T) {
			if !onMarkManager(t) {
				return
			}
			frozenJob(t, point)
		})
	}
}

func frozenJob(t *testing.T, point string) {
	ctx := testenv.Context(t)
	store, _ := testenv.Store(t, testenv.Postgres(t))
	url := testenv.NATS(t)
	opts := queue.Options{AckWait: slowAckWait, LeaseTTL: 2 * time.Second}
	q1 := testenv.Queue(t, url, "w1", opts)
	q2 := testenv.Queue(t, url, "w2", opts)
	e := &env{t: t, store: store, q: q2}
	const host = "act"

	c := config.Default()
	c.Actions.Bus = "user"
	c.Actions.Definitions = []config.Action{{Name: "restart-mark", Hosts: []string{"*"}, Roles: []string{"ops"},
		Params:  []config.ActionParam{{Name: "id", Pattern: "[a-z0-9]{1,12}"}},
		Systemd: config.ActionSystemd{Verb: "restart", Unit: "mark@{id}.service"}}}
	hp, err := hostpolicy.FromConfig(c)
	if err != nil {
		t.Fatal(err)
	}

	var id uuid.UUID
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	fp := func(p string, o *order.Order) error {
		if p == point && o.ID == id {
			once.Do(func() { close(held) })
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return nil
	}
	log1, log2 := &testenv.LogBuffer{}, &testenv.LogBuffer{}
	wopts := worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: slowAckWait, ShutdownGrace: 5 * time.Second}
	o1, o2 := wopts, wopts
	o1.Instance, o1.FailPoint, o2.Instance = "w1", fp, "w2"
	runWorkerPolicy(t, o1, store, q1, hp, testenv.LoggerTo(io.MultiWriter(t.Output(), log1)))
	testenv.WaitUntil(t, 30*time.Second, "w1 holds the host", func() bool { return strings.Contains(log1.String(), "worker consuming") })
	counted := &fenceCounts{Store: store}
	runWorkerPolicy(t, o2, counted, q2, hp, testenv.LoggerTo(io.MultiWriter(t.Output(), log2)))
	testenv.WaitUntil(t, 30*time.Second, "w2 stands by", func() bool { return strings.Contains(log2.String(), "waiting as standby") })

	a := &order.Order{ID: order.NewID(), Kind: order.KindAction, Host: host, Command: "action:restart-mark",
		Action:  &order.Action{Name: "restart-mark", Params: map[string]string{"id": "f1"}},
		Timeout: time.Minute, Principal: "test", Source: "rest", CaptureStdout: true, CaptureStderr: true}
	id = a.ID
	if _, err := store.InsertOrder(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := q2.Publish(ctx, host, id); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held:
	case <-ctx.Done():
		t.Fatalf("w1 never reached %s", point)
	}
	// Frozen: nothing of w1 reaches NATS any more.
	q1.Conn().Close()
	interrupted := e.waitStatus(id, order.StatusInterrupted)
	if interrupted.Attempt != 1 {
		t.Fatalf("the run: attempt %d, want 1", interrupted.Attempt)
	}
	close(release)
	testenv.WaitUntil(t, 30*time.Second, "w1 is done with the run", func() bool {
		return strings.Contains(log1.String(), "result not recorded")
	})

	marker, _ := os.ReadFile(filepath.Join(os.Getenv("HOME"), "marker"))
	evs, err := store.Events(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	var late map[string]any
	for _, ev := range evs {
		types = append(types, ev.Type)
		if ev.Type == "job_after_takeover" {
			late = ev.Detail
		}
	}
	if got, _ := store.GetOrder(ctx, id); got.Status != order.StatusInterrupted {
		t.Errorf("after w1 went on the run is %s, want interrupted", got.Status)
	}
	switch point {
	case "job_fenced":
		if strings.Contains(string(marker), "S f1") {
			t.Errorf("w1, stopped past its lease after its check in PostgreSQL, restarted mark@f1 for a run recorded interrupted: marker %q, events %q", marker, types)
		}
		if late != nil {
			t.Errorf("a job_after_takeover event without a job: %v", late)
		}
		if !strings.Contains(log1.String(), "past the lease") {
			t.Error("w1 did not say its lease refused the dispatch")
		}
	case "before_job":
		// The residual window: the job was queued, and it shows.
		testenv.WaitUntil(t, 30*time.Second, "mark@f1 starts", func() bool {
			b, _ := os.ReadFile(filepath.Join(os.Getenv("HOME"), "marker"))
			return strings.Contains(string(b), "S f1")
		})
		if late == nil {
			t.Fatalf("w1 queued a job after the run was recorded interrupted and the history does not say so: events %q", types)
		}
		if job, _ := late["job_id"].(float64); job <= 0 || late["attempt"] != float64(1) || late["job"] != "systemd:restart:mark@f1.service" {
			t.Errorf("job_after_takeover detail %v: want the job's id, attempt 1 and the job", late)
		}
		if i := slices.Index(types, "job_after_takeover"); i < slices.Index(types, "interrupted") {
			t.Errorf("events %q: want job_after_takeover after interrupted", types)
		}
	}
	// The host's owner now runs the action.
	next := &order.Order{ID: order.NewID(), Kind: order.KindAction, Host: host, Command: "action:restart-mark",
		Action:  &order.Action{Name: "restart-mark", Params: map[string]string{"id": "n1"}},
		Timeout: time.Minute, Principal: "test", Source: "rest", CaptureStdout: true, CaptureStderr: true}
	if _, err := store.InsertOrder(ctx, next); err != nil {
		t.Fatal(err)
	}
	if _, err := q2.Publish(context.WithoutCancel(ctx), host, next.ID); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(next.ID, order.StatusSucceeded)
	// What the fence costs an action run: two statements, the check
	// before the job and the one after it.
	if owns, after := counted.owns.Load(), counted.after.Load(); owns != 1 || after != 1 {
		t.Errorf("the next run's fence: %d OwnsAttempt and %d JobAfterTakeover, want 1 and 1", owns, after)
	}
}

// fenceCounts is the real store; it counts the fence's statements.
type fenceCounts struct {
	worker.Store
	owns, after atomic.Int32
}

func (s *fenceCounts) OwnsAttempt(ctx context.Context, id uuid.UUID, attempt int, w string) (bool, error) {
	s.owns.Add(1)
	return s.Store.OwnsAttempt(ctx, id, attempt, w)
}

func (s *fenceCounts) JobAfterTakeover(ctx context.Context, c *postgres.JobCheck, id uuid.UUID, attempt int, w string, detail map[string]any) (bool, error) {
	s.after.Add(1)
	return s.Store.JobAfterTakeover(ctx, c, id, attempt, w, detail)
}
