package main

// Actions under faults (hA11): a systemd action's run is a D-Bus job of
// the host's systemd, not a process of the worker's. These tests run the
// whole fault stack (PostgreSQL, nats-server, `orderly api`, `orderly
// worker`) in a private mount namespace beside a real systemd user
// manager (testenv.UserManagerScript), kill, freeze and restart the
// processes around one restart of a slow-starting unit, and check from
// outside: the unit's ExecStartPre writes "S <id>" to a marker as it
// starts and "E <id>" once the test opens its gate, so the marker is
// systemd's own count of the restarts; PostgreSQL's rows say how each run
// ended; the host runs the next action.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/testenv"
)

// actionsInner marks the test process that runs inside the mount
// namespace, beside the user manager.
const actionsInner = "ORDERLY_FAULTS_ACTIONS"

// actionsManager is the user manager of the action fault tests, with the
// template unit slow@.service: its start waits, in ExecStartPre, for the
// gate file of its instance, between the marker's "S" and "E" lines.
var actionsManager = testenv.UserManagerScript(`printf '%s\n' '[Unit]' 'Description=orderly fault test %i' '[Service]' \
	'ExecStartPre=/bin/sh -c "echo S %i >> %h/marker; while [ ! -e %h/gate-%i ]; do sleep 0.1; done; echo E %i >> %h/marker"' \
	'ExecStart=/bin/sleep infinity' > "$HOME/.config/systemd/user/slow@.service"`)

// actFaultsConfig is the action the tests run: a restart of slow@<id>.
const actFaultsConfig = `actions:
  bus: user
  definitions:
    - name: restart-slow
      params:
        - {name: id, pattern: "[a-z0-9]{1,12}"}
      systemd: {verb: restart, unit: "slow@{id}.service"}
      principals: ["*"]
      hosts: ["*"]
      timeout: 120s
    - name: restart-limited
      params:
        - {name: id, pattern: "[a-z0-9]{1,12}"}
      systemd: {verb: restart, unit: "slow@{id}.service"}
      principals: ["*"]
      hosts: ["*"]
      timeout: 120s
      limit: {runs: 2, per: 5m, concurrent_per_host: 1}
`

// inActionNamespace runs the test again inside a mount namespace beside
// the user manager, reusing this run's orderly and nats-server binaries
// and template cluster; it reports whether the caller is that inner run
// and must do the test.
func inActionNamespace(t *testing.T) bool {
	t.Helper()
	if os.Getenv(actionsInner) == "1" {
		return true
	}
	testenv.NeedRootTools(t, "a systemd user manager", "scripts/ensure-dbus.sh",
		"unshare", "dbus-daemon", "systemctl", "/lib/systemd/systemd")
	if _, err := natsServerBin(); err != nil {
		t.Fatal(err)
	}
	tmpl, err := faultPGTemplate()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(binDirEnv, filepath.Dir(orderlyBin))
	t.Setenv(pgTemplateEnv, tmpl)
	testenv.RerunInMountNamespace(t, actionsManager, nil, t.Name(), actionsInner)
	return false
}

// actFaults is a fault stack whose workers run the restart-slow action
// on the user manager's bus.
type actFaults struct {
	*rbFaults // for its order rows (readRow, waitEnded)
	home      string
	client    *http.Client
}

func newActFaults(t *testing.T) *actFaults {
	t.Helper()
	s := newFaultStackConf(t, func(conf string) string { return conf + actFaultsConfig })
	a := &actFaults{rbFaults: &rbFaults{faultStack: s}, home: os.Getenv("HOME"), client: &http.Client{Timeout: 60 * time.Second}}
	// Whatever the test left waiting in an ExecStartPre ends with it.
	t.Cleanup(func() {
		for _, id := range a.started() {
			a.open(id)
		}
	})
	return a
}

// inJob is the set-up of the tests that break something while systemd
// holds a job: the stack, a worker of h1, and a run of restart-slow of
// slow@<id> whose job has started (its ExecStartPre wrote "S <id>") and
// waits at the gate.
func inJob(t *testing.T, id string) (*actFaults, *faultWorker, keyedAnswer) {
	t.Helper()
	a := newActFaults(t)
	w := a.worker("h1")
	ans := a.mustRun("h1", id, "")
	a.waitLine(id, "S", 60*time.Second)
	return a, w, ans
}

// worker starts a worker of host on the user manager's bus.
func (a *actFaults) worker(host string) *faultWorker {
	a.t.Helper()
	return a.startWorkerEnv(host, "DBUS_SESSION_BUS_ADDRESS="+os.Getenv("DBUS_SESSION_BUS_ADDRESS"),
		"XDG_RUNTIME_DIR="+os.Getenv("XDG_RUNTIME_DIR"))
}

// run asks for restart-slow of slow@<id> on host, with key as its
// Idempotency-Key ("" for none).
func (a *actFaults) run(host, id, key string) keyedAnswer {
	a.t.Helper()
	return a.runAction("restart-slow", host, id, key)
}

// runAction is run of the action name.
func (a *actFaults) runAction(name, host, id, key string) keyedAnswer {
	a.t.Helper()
	body, _ := json.Marshal(map[string]any{"host": host, "params": map[string]string{"id": id}})
	return postKeyed(a.t, a.client, a.apiURL+"/v1/actions/"+name+"/run", a.token, key, body)
}

// mustRun is run that fails the test unless the run was accepted.
func (a *actFaults) mustRun(host, id, key string) keyedAnswer {
	a.t.Helper()
	ans := a.run(host, id, key)
	if ans.code != http.StatusAccepted || ans.id == uuid.Nil {
		a.t.Fatalf("run slow@%s: %d %s", id, ans.code, ans.body)
	}
	return ans
}

// marker is the unit's marker lines, in order.
func (a *actFaults) marker() []string {
	b, _ := os.ReadFile(filepath.Join(a.home, "marker"))
	var out []string
	for line := range strings.Lines(string(b)) {
		out = append(out, strings.TrimSpace(line))
	}
	return out
}

// lines is the marker's lines of instance id ("S", "E").
func (a *actFaults) lines(id string) []string {
	var out []string
	for _, l := range a.marker() {
		if f := strings.Fields(l); len(f) == 2 && f[1] == id {
			out = append(out, f[0])
		}
	}
	return out
}

// started lists the instances whose start the marker shows.
func (a *actFaults) started() []string {
	var out []string
	for _, l := range a.marker() {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "S" && !slices.Contains(out, f[1]) {
			out = append(out, f[1])
		}
	}
	return out
}

// waitLine waits until the marker holds line ("S" or "E") for id.
func (a *actFaults) waitLine(id, line string, d time.Duration) {
	a.t.Helper()
	waitUntil(a.t, d, "slow@"+id+": "+line, func() bool { return slices.Contains(a.lines(id), line) })
}

// open opens the gate of slow@<id>: its start goes on to the end.
func (a *actFaults) open(id string) {
	if err := os.WriteFile(filepath.Join(a.home, "gate-"+id), nil, 0o644); err != nil {
		a.t.Error(err)
	}
}

// unit is systemd's view of slow@<id>: its ActiveState and its job ("" when none).
func (a *actFaults) unit(id string) (state, job string) {
	a.t.Helper()
	out, err := exec.Command("systemctl", "--user", "show", "-p", "ActiveState", "-p", "Job", "slow@"+id+".service").CombinedOutput()
	if err != nil {
		return "", fmt.Sprintf("systemctl: %v: %s", err, out)
	}
	for line := range strings.Lines(string(out)) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		switch k {
		case "ActiveState":
			state = v
		case "Job":
			job = v
		}
	}
	return state, job
}

// checkOnce fails the test unless slow@<id> started exactly once and
// its start ended.
func (a *actFaults) checkOnce(id string) {
	a.t.Helper()
	if got := a.lines(id); !slices.Equal(got, []string{"S", "E"}) {
		a.t.Errorf("slow@%s: marker %q, want one start (S, E)", id, got)
	}
}

// nextRuns checks that host runs the action again, to the end.
func (a *actFaults) nextRuns(host, id string) {
	a.t.Helper()
	a.open(id)
	ans := a.mustRun(host, id, "")
	if o := a.waitEnded(ans.id, 60*time.Second); o.status != "succeeded" {
		a.t.Errorf("the next run on %s: %s (%s) %q", host, o.status, o.error, o.stdout)
	}
	a.checkOnce(id)
}

// killWorker SIGKILLs w and waits until it is gone.
func (a *actFaults) killWorker(w *faultWorker) {
	a.t.Helper()
	w.signal(syscall.SIGKILL)
	if !w.waitExit(10 * time.Second) {
		a.t.Fatalf("worker %d did not exit after SIGKILL", w.pid())
	}
}

// TestFaultsActionWorkerKilled SIGKILLs the worker of a systemd action
// while systemd's job is in flight (the unit's start waits at its gate),
// and after the job ended but before the result was committed
// (PostgreSQL frozen until the worker is gone). The successor must record
// the run interrupted (its outcome is the job's, which it did not see)
// and never restart the unit again: the marker holds one start.
func TestFaultsActionWorkerKilled(t *testing.T) {
	for _, when := range []string{"in_job", "after_job"} {
		t.Run(when, func(t *testing.T) {
			if !inActionNamespace(t) {
				return
			}
			a, w, ans := inJob(t, "k1")
			if when == "after_job" {
				a.pg.signal(syscall.SIGSTOP)
				a.note("SIGSTOP postgresql in the job")
				a.open("k1")
				waitUntil(t, 30*time.Second, "the job ends", func() bool {
					st, job := a.unit("k1")
					return st == "active" && job == ""
				})
				// The worker reads the unit's state after the job, then
				// writes the result, which waits for PostgreSQL.
				pause(t.Context(), time.Second)
			}
			a.killWorker(w)
			a.note("kill -9 worker %d %s", w.pid(), when)
			if when == "after_job" {
				a.pg.signal(syscall.SIGCONT)
				a.note("SIGCONT postgresql")
			}
			a.worker("h1")
			o := a.waitEnded(ans.id, 60*time.Second)
			if o.status != "interrupted" || o.attempts != 1 {
				t.Errorf("the killed run: %s after %d starts (%s), want interrupted after 1", o.status, o.attempts, o.error)
			}
			a.open("k1")
			a.waitLine("k1", "E", 30*time.Second)
			a.nextRuns("h1", "n1")
			a.checkOnce("k1")
		})
	}
}

// TestFaultsActionManagerGone takes systemd away from under a systemd
// action's job: the user manager SIGKILLed (and a new one started), or
// its bus (dbus-daemon) SIGKILLed. The job's end never comes as a
// signal; the run must end, failed with the job's id and an error that
// says whether it ran is unknown, long before its 120 s timeout, and the
// host's queue must go on: the next run starts (on the new manager, it
// restarts the unit; after the bus, it restarts it on the bus the
// manager's dbus.socket starts again, or fails at once saying why).
func TestFaultsActionManagerGone(t *testing.T) {
	for _, what := range []string{"manager", "bus"} {
		t.Run(what, func(t *testing.T) {
			if !inActionNamespace(t) {
				return
			}
			a, _, ans := inJob(t, "g1")
			name := map[string]string{"manager": "systemd", "bus": "dbus-daemon"}[what]
			pids := testenv.UserManagerPids(name)
			if len(pids) == 0 {
				t.Fatalf("no %s of this test", name)
			}
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			a.note("kill -9 %s %v in the job", name, pids)
			if what == "manager" {
				sd := exec.Command("/lib/systemd/systemd", "--user")
				sd.Stdout, sd.Stderr = io.Discard, io.Discard
				if err := sd.Start(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					_ = sd.Process.Signal(syscall.SIGTERM)
					_ = sd.Wait()
				})
			}
			// Well within the run's 120 s timeout, which is what it waited
			// for.
			o := a.waitEnded(ans.id, 30*time.Second)
			var out struct {
				JobID int `json:"job_id"`
			}
			_ = json.Unmarshal([]byte(o.stdout), &out)
			stderr := a.stderr(ans.id)
			if o.status != "failed" || out.JobID == 0 || !strings.Contains(stderr, "whether the job ran is unknown") {
				t.Errorf("the run whose systemd went: %s (%s), stdout %q, stderr %q; want failed, the job's id, whether it ran unknown",
					o.status, o.error, o.stdout, stderr)
			}
			a.open("g1")
			switch what {
			case "manager":
				waitUntil(t, 30*time.Second, "the new manager runs", func() bool {
					st, _ := exec.Command("systemctl", "--user", "is-system-running").Output()
					s := strings.TrimSpace(string(st))
					return s == "running" || s == "degraded"
				})
				a.nextRuns("h1", "n1")
			case "bus":
				a.open("n1")
				// The manager's dbus.socket may start a bus again on the
				// path: the next run either restarts the unit there, or
				// fails at once saying why.
				next := a.mustRun("h1", "n1", "")
				o := a.waitEnded(next.id, 30*time.Second)
				stderr := a.stderr(next.id)
				if o.status != "succeeded" && (o.status != "failed" || !strings.HasPrefix(stderr, "systemd: ")) {
					t.Errorf("the next run after the bus went: %s (%s), stderr %q; want succeeded, or failed saying why", o.status, o.error, stderr)
				}
				t.Logf("the next run after the bus went: %s %q", o.status, stderr)
			}
		})
	}
}

// stderr is the order's stored stderr.
func (a *actFaults) stderr(id uuid.UUID) string {
	a.t.Helper()
	var s string
	if err := a.pool.QueryRow(a.t.Context(), `SELECT convert_from(coalesce(stderr, ''), 'UTF8') FROM orders WHERE id = $1`, id).Scan(&s); err != nil {
		a.t.Errorf("stderr of %s: %v", id, err)
	}
	return s
}

// TestFaultsActionFrozen freezes (SIGSTOP) the worker of a systemd
// action past its lease while a standby waits, and thaws it once the
// standby took the host and recorded the run interrupted:
//   - in_job: frozen while the job is in flight; thawed once it ended, it
//     sees the job's end and must record nothing; the unit was restarted
//     once;
//   - before_job: frozen between its claim and the job (its dial waits
//     for the session bus, itself frozen until the worker is); thawed, it
//     must not queue the job at all: the run is over, recorded
//     interrupted, and nobody is told the unit was restarted.
func TestFaultsActionFrozen(t *testing.T) {
	for _, when := range []string{"in_job", "before_job"} {
		t.Run(when, func(t *testing.T) {
			if !inActionNamespace(t) {
				return
			}
			a := newActFaults(t)
			first := a.worker("h1")
			waitUntil(t, 30*time.Second, "the first worker holds h1", func() bool { return first.logged("worker consuming") })
			standby := a.worker("h1")
			waitUntil(t, 30*time.Second, "the standby waits", func() bool { return standby.logged("waiting as standby") })
			var bus []int
			if when == "before_job" {
				// A run first: the worker's dial starts the bus of the
				// manager's dbus.socket, which the test then freezes too.
				a.nextRuns("h1", "w0")
				a.open("f1") // a job, were one queued, would end at once
				bus = testenv.UserManagerPids("dbus-daemon")
				if len(bus) == 0 {
					t.Fatal("no dbus-daemon of this test")
				}
				for _, pid := range bus {
					_ = syscall.Kill(pid, syscall.SIGSTOP)
					t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
				}
				a.note("SIGSTOP dbus-daemon %v", bus)
			}
			ans := a.mustRun("h1", "f1", "")
			if when == "before_job" {
				waitUntil(t, 60*time.Second, "the run is claimed", func() bool {
					o, err := a.readRow(ans.id)
					return err == nil && o.status == "running"
				})
				// Whether the worker is in its dial by now or still before
				// it, it has not queued the job: the bus is frozen.
				pause(t.Context(), time.Second)
			} else {
				a.waitLine("f1", "S", 60*time.Second)
			}
			first.signal(syscall.SIGSTOP)
			a.note("SIGSTOP worker %d %s", first.pid(), when)
			if when == "before_job" {
				for _, pid := range bus {
					_ = syscall.Kill(pid, syscall.SIGCONT)
				}
				a.note("SIGCONT dbus-daemon %v", bus)
			}
			o := a.waitEnded(ans.id, 60*time.Second)
			if o.status != "interrupted" || o.attempts != 1 {
				t.Errorf("the frozen worker's run: %s after %d starts (%s), want interrupted after 1", o.status, o.attempts, o.error)
			}
			if when == "in_job" {
				a.open("f1")
				a.waitLine("f1", "E", 30*time.Second)
			}
			first.signal(syscall.SIGCONT)
			a.note("SIGCONT worker %d", first.pid())
			waitUntil(t, 30*time.Second, "the thawed worker is done with the run", func() bool {
				return first.logged("result not recorded") || !first.alive()
			})
			if o := a.row(ans.id); o.status != "interrupted" {
				t.Errorf("after the thaw the run is %s (%s)", o.status, o.error)
			}
			a.nextRuns("h1", "n1")
			switch when {
			case "in_job":
				a.checkOnce("f1")
			case "before_job":
				if got := a.lines("f1"); len(got) != 0 {
					t.Errorf("slow@f1 was restarted by the thawed worker of a run recorded interrupted: marker %q", got)
				}
			}
		})
	}
}

// TestFaultsActionDependencyRestart restarts PostgreSQL (crash) or
// nats-server (kill -9) while a systemd action's job is in flight: the
// worker waits the job out, records it succeeded once (attempt 1, the
// job's outcome on stdout), and the unit was restarted once.
func TestFaultsActionDependencyRestart(t *testing.T) {
	for _, dep := range []string{"postgres", "nats"} {
		t.Run(dep, func(t *testing.T) {
			if !inActionNamespace(t) {
				return
			}
			a, _, ans := inJob(t, "d1")
			switch dep {
			case "postgres":
				a.pg.restartImmediate()
			case "nats":
				a.nats.kill9()
				pause(t.Context(), 500*time.Millisecond)
				a.nats.start()
			}
			a.note("%s restarted in the job", dep)
			a.open("d1")
			o := a.waitEnded(ans.id, 90*time.Second)
			if o.status != "succeeded" || o.attempts != 1 || !strings.Contains(o.stdout, `"job_result":"done"`) {
				t.Errorf("the run: %s after %d starts (%s), stdout %q", o.status, o.attempts, o.error, o.stdout)
			}
			a.checkOnce("d1")
			a.nextRuns("h1", "n1")
		})
	}
}

// TestFaultsActionLimitAcrossAPIKill kills the API (SIGKILL) while a run
// of an action with limits (2 runs per 5 minutes, 1 at a time per host)
// waits for PostgreSQL, frozen (its insert, under the limit's advisory
// lock, in the server's socket, when the API got that far), and thaws
// PostgreSQL once the API is gone.
// The retry with the run's key gets the one run (replayed, or first
// recorded now); the limits still count it, and only it: a second run
// while it runs is 429 at once (no lock left held, nothing counted
// twice), a second run after it is accepted, and a third is 429. The
// unit restarts once per accepted run.
func TestFaultsActionLimitAcrossAPIKill(t *testing.T) {
	if !inActionNamespace(t) {
		return
	}
	a := newActFaults(t)
	a.worker("h1")
	a.pg.signal(syscall.SIGSTOP)
	a.note("SIGSTOP postgresql")
	sent := make(chan keyedAnswer, 1)
	go func() { sent <- a.runAction("restart-limited", "h1", "l1", "limited-l1") }()
	// Holds the request in the API, waiting for PostgreSQL (its token's
	// check or its insert, whichever it reached).
	pause(t.Context(), time.Second)
	a.killAPI()
	a.note("kill -9 api with the insert in frozen PostgreSQL")
	a.pg.signal(syscall.SIGCONT)
	a.note("SIGCONT postgresql")
	if first := <-sent; first.code == http.StatusAccepted {
		t.Logf("the first request was answered before the kill: %s", first.id)
	}
	a.startAPI()
	retry := a.runAction("restart-limited", "h1", "l1", "limited-l1")
	if retry.code != http.StatusAccepted && retry.code != http.StatusOK || retry.id == uuid.Nil {
		t.Fatalf("the retry with the key: %d %s", retry.code, retry.body)
	}
	t.Logf("the retry: %d, replayed %v", retry.code, retry.replayed)
	a.waitLine("l1", "S", 60*time.Second)
	if busy := a.runAction("restart-limited", "h1", "l2", "limited-l2"); busy.code != http.StatusTooManyRequests {
		t.Errorf("a second run while the first runs: %d %s, want 429", busy.code, busy.body)
	}
	var runs int
	if err := a.pool.QueryRow(t.Context(), `SELECT count(*) FROM orders WHERE command = 'action:restart-limited'`).Scan(&runs); err != nil || runs != 1 {
		t.Errorf("runs of restart-limited recorded: %d (%v), want 1", runs, err)
	}
	a.open("l1")
	if o := a.waitEnded(retry.id, 60*time.Second); o.status != "succeeded" {
		t.Errorf("the first run: %s (%s)", o.status, o.error)
	}
	a.open("l2")
	second := a.runAction("restart-limited", "h1", "l2", "limited-l2")
	if second.code != http.StatusAccepted {
		t.Fatalf("the second run: %d %s, want 202", second.code, second.body)
	}
	if o := a.waitEnded(second.id, 60*time.Second); o.status != "succeeded" {
		t.Errorf("the second run: %s (%s)", o.status, o.error)
	}
	if third := a.runAction("restart-limited", "h1", "l3", "limited-l3"); third.code != http.StatusTooManyRequests {
		t.Errorf("a third run in the 5 minutes: %d %s, want 429", third.code, third.body)
	}
	a.checkOnce("l1")
	a.checkOnce("l2")
	if got := a.lines("l3"); len(got) != 0 {
		t.Errorf("slow@l3 ran: %q", got)
	}
}
