package systemd_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker/hostpolicy"
	"github.com/orderly-run/orderly/worker/systemd"
)

// innerEnv marks the test process that runs inside the private mount
// namespace, next to a real user manager.
const innerEnv = "ORDERLY_SYSTEMD_USER_MANAGER"

// setupScript is the user manager of testenv.UserManagerScript with the
// harmless template units example@.service (sleep infinity) and
// slowstop@.service (the same, 3 s to stop) and slowstart@.service (a
// minute to start), gated@.service (its start waits for the file
// gate-<instance> in $HOME).
var setupScript = testenv.UserManagerScript(`printf '[Unit]\nDescription=orderly test instance %%i\n[Service]\nExecStart=/bin/sleep infinity\n' \
	> "$HOME/.config/systemd/user/example@.service"
printf '[Unit]\nDescription=orderly test slow stop %%i\n[Service]\nExecStart=/bin/sleep infinity\nExecStop=/bin/sleep 3\n' \
	> "$HOME/.config/systemd/user/slowstop@.service"
printf '[Unit]\nDescription=orderly test slow start %%i\n[Service]\nExecStartPre=/bin/sleep 60\nExecStart=/bin/sleep infinity\n' \
	> "$HOME/.config/systemd/user/slowstart@.service"
printf '[Unit]\nDescription=orderly test gated start %%i\n[Service]\nExecStartPre=/bin/sh -c "while [ ! -e %%h/gate-%%i ]; do sleep 0.1; done"\nExecStart=/bin/sleep infinity\n' \
	> "$HOME/.config/systemd/user/gated@.service"`)

// onUserManager runs the test again in a private mount namespace beside a
// real systemd user manager (setupScript), where it calls inside. It
// needs root, unshare, dbus-daemon and systemd (scripts/ensure-dbus.sh
// installs them); under CI=true their absence fails the test.
func onUserManager(t *testing.T, inside func(t *testing.T)) {
	t.Helper()
	if os.Getenv(innerEnv) == "1" {
		inside(t)
		return
	}
	testenv.NeedRootTools(t, "a systemd user manager", "scripts/ensure-dbus.sh",
		"unshare", "dbus-daemon", "systemctl", "/lib/systemd/systemd")
	testenv.RerunInMountNamespace(t, setupScript, nil, t.Name(), innerEnv)
}

// TestUserManager restarts example@0042.service on a real systemd user
// manager over D-Bus and checks that its invocation id changed; and that
// an action whose value the worker's rules refuse never reaches D-Bus.
func TestUserManager(t *testing.T) { onUserManager(t, userManagerInside) }

func userManagerInside(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const unit = "example@0042.service"
	first, err := systemd.Run(ctx, "user", "start", unit, nil)
	if err != nil || first.JobResult != "done" || first.ActiveState != "active" || first.InvocationID == "" {
		t.Fatalf("start: %+v %v", first, err)
	}

	// The worker's own path: its config, bus = user, the action rendered
	// from its own rules, the verb run as Prepared.Native.
	c := config.Default()
	c.Actions.Bus = "user"
	c.Actions.Definitions = []config.Action{{Name: "restart-example", Hosts: []string{"*"}, Roles: []string{"ops"},
		Params:  []config.ActionParam{{Name: "id", Pattern: "[0-9]{4}", Units: "example@*.service"}},
		Systemd: config.ActionSystemd{Verb: "restart", Unit: "example@{id}.service"}}}
	hp, err := hostpolicy.FromConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	o := &order.Order{ID: order.NewID(), Kind: order.KindAction, Host: "h", Command: "action:restart-example",
		Action: &order.Action{Name: "restart-example", Params: map[string]string{"id": "0042"}}}
	prep, err := hp.Prepare(o)
	if err != nil || prep.Native == nil {
		t.Fatalf("prepare: %v", err)
	}
	res := prep.Native(ctx, nil)
	if res.StartErr != nil || res.ExitCode == nil || *res.ExitCode != 0 {
		t.Fatalf("restart: %+v stderr %s", res, res.Stderr.Content)
	}
	var got systemd.Outcome
	if err := json.Unmarshal(res.Stdout.Content, &got); err != nil {
		t.Fatalf("result %q: %v", res.Stdout.Content, err)
	}
	if got.JobResult != "done" || got.ActiveState != "active" || got.PreviousInvocationID != first.InvocationID ||
		got.InvocationID == "" || got.InvocationID == first.InvocationID {
		t.Fatalf("restart outcome %+v, first invocation %s: want done, active, a new invocation id", got, first.InvocationID)
	}
	t.Logf("restarted %s: invocation %s -> %s", unit, got.PreviousInvocationID, got.InvocationID)

	// Unit choices, as the worker answers them over the bus: only for a
	// glob its config offers.
	units, err := hp.UnitChoices(ctx, "example@*.service")
	if err != nil || len(units) != 1 || units[0].Name != unit || units[0].ActiveState != "active" {
		t.Fatalf("unit choices: %+v %v", units, err)
	}
	if units, err := hp.UnitChoices(ctx, "*.service"); err == nil {
		t.Errorf("a glob the config does not offer listed %+v", units)
	}

	// A value the worker's rules refuse is rejected before any D-Bus
	// call: no job, no new invocation.
	for _, bad := range []string{"0042.service dbus", "../0042", "42", "0043\n"} {
		o.Action.Params["id"] = bad
		if prep, err := hp.Prepare(o); err == nil {
			t.Errorf("id %q prepared %+v", bad, prep)
		}
	}
	// A call systemd refuses (no such unit) fails the order like a failed
	// job: exit 1, the reason on stderr, no outcome on stdout.
	c.Actions.Definitions = append(c.Actions.Definitions, config.Action{Name: "restart-nosuch", Hosts: []string{"*"}, Roles: []string{"ops"},
		Params:  []config.ActionParam{{Name: "id", Pattern: "[0-9]{4}"}},
		Systemd: config.ActionSystemd{Verb: "restart", Unit: "nosuch@{id}.service"}})
	if hp, err = hostpolicy.FromConfig(c); err != nil {
		t.Fatal(err)
	}
	nosuch := &order.Order{ID: order.NewID(), Kind: order.KindAction, Host: "h", Command: "action:restart-nosuch",
		Action: &order.Action{Name: "restart-nosuch", Params: map[string]string{"id": "0042"}}}
	if prep, err = hp.Prepare(nosuch); err != nil {
		t.Fatal(err)
	}
	res = prep.Native(ctx, nil)
	if res.StartErr != nil || res.ExitCode == nil || *res.ExitCode != 1 || len(res.Stdout.Content) != 0 ||
		!strings.Contains(string(res.Stderr.Content), "nosuch@0042.service") {
		t.Errorf("restart of a unit systemd does not have: %+v, stderr %q", res, res.Stderr.Content)
	}
	// Not a refusal of the worker's user: no polkit hint
	// (TestUserManagerRefusalNamesThePolkitRule).
	if strings.Contains(string(res.Stderr.Content), "polkit") {
		t.Errorf("restart of a unit systemd does not have names polkit: %q", res.Stderr.Content)
	}

	after, err := systemd.Run(ctx, "user", "try-restart", "example@0043.service", nil)
	if err != nil {
		t.Fatal(err)
	}
	if after.InvocationID != "" {
		t.Errorf("example@0043.service ran: %+v", after)
	}
}

// TestUserManagerStopTimesOut stops a unit on a real systemd user
// manager with an action whose timeout is shorter than the stop: the
// order is timed out with no exit code and no signal, as no process of
// the order's exited or was signalled (an exit code 1 read as "the job
// failed"), and keeps the job's id on stdout; the stop itself goes on,
// systemd's.
func TestUserManagerStopTimesOut(t *testing.T) { onUserManager(t, stopTimesOutInside) }

func stopTimesOutInside(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const unit = "slowstop@1.service"
	if out, err := systemd.Run(ctx, "user", "start", unit, nil); err != nil || out.JobResult != "done" {
		t.Fatalf("start: %+v %v", out, err)
	}
	c := config.Default()
	c.Actions.Bus = "user"
	c.Actions.Definitions = []config.Action{{Name: "stop-slow", Hosts: []string{"*"}, Roles: []string{"ops"},
		Timeout: 500 * time.Millisecond, Params: []config.ActionParam{{Name: "id", Pattern: "[0-9]+"}},
		Systemd: config.ActionSystemd{Verb: "stop", Unit: "slowstop@{id}.service"}}}
	hp, err := hostpolicy.FromConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	prep, err := hp.Prepare(&order.Order{ID: order.NewID(), Kind: order.KindAction, Host: "h", Command: "action:stop-slow",
		Action: &order.Action{Name: "stop-slow", Params: map[string]string{"id": "1"}}})
	if err != nil {
		t.Fatal(err)
	}
	res := prep.Native(ctx, nil)
	var got systemd.Outcome
	if err := json.Unmarshal(res.Stdout.Content, &got); err != nil || got.JobID == 0 {
		t.Errorf("stdout %q (%v): want the outcome with the job's id", res.Stdout.Content, err)
	}
	if !res.TimedOut || res.Canceled || res.ExitCode != nil || res.Signal != "" {
		t.Fatalf("stop past the timeout: timed out %v, canceled %v, exit code %v, signal %q: want timed out, no exit code, no signal",
			res.TimedOut, res.Canceled, ptrString(res.ExitCode), res.Signal)
	}
	t.Logf("stderr: %s", res.Stderr.Content)
}

func ptrString(p *int) string {
	if p == nil {
		return "nil"
	}
	return strconv.Itoa(*p)
}

// noBusEnv marks the test process that runs with no session bus to find.
const noBusEnv = "ORDERLY_SYSTEMD_NO_USER_BUS"

// noBusScript hides /run/user (where a user's bus is found without an
// address) under a tmpfs in a private mount namespace and puts a
// dbus-launch first on PATH that leaves a mark, then runs the test binary
// ("$@") with no DBUS_SESSION_BUS_ADDRESS.
const noBusScript = `set -eu
mkdir -p /run/user
mount -t tmpfs tmpfs /run/user
D=$(mktemp -d)
printf '#!/bin/sh\ntouch %s/launched\necho DBUS_SESSION_BUS_ADDRESS=unix:path=%s/nobus\n' "$D" "$D" > "$D/dbus-launch"
chmod 755 "$D/dbus-launch"
unset DBUS_SESSION_BUS_ADDRESS
export PATH="$D:$PATH" ORDERLY_TEST_MARK="$D/launched"
"$@"
`

// TestUserBusIsNeverLaunched: with actions.bus user and no session bus
// to find, a run and a unit listing fail saying what to set; they never
// run dbus-launch (which started a stray bus daemon that the worker then
// talked to for good).
func TestUserBusIsNeverLaunched(t *testing.T) {
	if os.Getenv(noBusEnv) == "1" {
		mark := os.Getenv("ORDERLY_TEST_MARK")
		if _, err := systemd.ListUnits(t.Context(), "user", "example@*.service"); err == nil ||
			!strings.Contains(err.Error(), "DBUS_SESSION_BUS_ADDRESS") {
			t.Errorf("list units with no session bus: %v, want an error naming DBUS_SESSION_BUS_ADDRESS", err)
		}
		if out, err := systemd.Run(t.Context(), "user", "restart", "example@0042.service", nil); err == nil {
			t.Errorf("restart with no session bus: %+v", out)
		}
		if _, err := os.Stat(mark); err == nil {
			t.Errorf("dbus-launch was run")
		}
		if a := os.Getenv("DBUS_SESSION_BUS_ADDRESS"); a != "" {
			t.Errorf("DBUS_SESSION_BUS_ADDRESS became %q", a)
		}
		return
	}
	testenv.NeedRootTools(t, "a private mount namespace", "scripts/ensure-dbus.sh", "unshare")
	testenv.RerunInMountNamespace(t, noBusScript, nil, "TestUserBusIsNeverLaunched", noBusEnv)
}

// TestUserManagerKilledInAJob SIGKILLs the user manager while a start
// job of its is in flight: the job's end never comes as a signal, and Run
// must say so (the job's id, whether it ran unknown) long before its
// context ends, rather than wait for it.
func TestUserManagerKilledInAJob(t *testing.T) {
	if os.Getenv(innerEnv) == "1" {
		killedInAJobInside(t, "systemd")
		return
	}
	testenv.NeedRootTools(t, "a systemd user manager", "scripts/ensure-dbus.sh",
		"unshare", "dbus-daemon", "systemctl", "/lib/systemd/systemd")
	mark := filepath.Join(t.TempDir(), "xdg")
	t.Setenv(markEnv, mark)
	testenv.RerunInMountNamespace(t, setupScript, nil, "TestUserManagerKilledInAJob", innerEnv)
	// The killed manager could not stop its units (the start's sleep, the
	// bus its dbus.socket started): the script ends them, one
	// dbus-daemon per run left running otherwise.
	xdg, err := os.ReadFile(mark)
	if err != nil || len(xdg) == 0 {
		t.Fatalf("the inner run's XDG_RUNTIME_DIR: %q %v", xdg, err)
	}
	if left := scriptProcs(string(xdg)); len(left) > 0 {
		t.Errorf("left running after the script: %q", left)
	}
}

// markEnv names the file where an inner run writes its XDG_RUNTIME_DIR.
const markEnv = "ORDERLY_TEST_XDG_MARK"

// scriptProcs lists the live processes (pid and argv) whose
// XDG_RUNTIME_DIR is xdg.
func scriptProcs(xdg string) []string {
	want := "XDG_RUNTIME_DIR=" + xdg
	var left []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !slices.Contains(strings.Split(string(env), "\x00"), want) {
			continue
		}
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		left = append(left, e.Name()+" "+strings.ReplaceAll(string(cmd), "\x00", " "))
	}
	return left
}

// TestUserBusKilledInAJob is TestUserManagerKilledInAJob with the
// session bus (dbus-daemon) SIGKILLed in the job instead.
func TestUserBusKilledInAJob(t *testing.T) {
	onUserManager(t, func(t *testing.T) { killedInAJobInside(t, "dbus-daemon") })
}

// killedInAJobInside starts a unit whose start takes a minute, SIGKILLs
// the test's processes named name (its manager, systemd, or its bus,
// dbus-daemon: the script's, and the one the manager's dbus.socket starts
// on the same path, which clients reach once the manager runs) in the job,
// and checks what Run says.
func killedInAJobInside(t *testing.T, name string) {
	if mark := os.Getenv(markEnv); mark != "" {
		if err := os.WriteFile(mark, []byte(os.Getenv("XDG_RUNTIME_DIR")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	res := startInFlight(ctx, t, "slowstart@1.service")
	for _, pid := range managerPids(t, name) {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}

	select {
	case r := <-res:
		if r.err == nil || r.out.JobID == 0 || !strings.Contains(r.err.Error(), "whether the job ran is unknown") {
			t.Errorf("start whose manager was killed: %+v %v; want the job's id and an error saying whether it ran is unknown", r.out, r.err)
		}
		t.Logf("run: %v", r.err)
	case <-time.After(30 * time.Second):
		t.Fatalf("start whose manager was killed still waits for its job 30 s on")
	}
}

// ran is what systemd.Run returned.
type ran struct {
	out systemd.Outcome
	err error
}

// startInFlight starts unit through systemd.Run and returns once the
// manager shows its start job in flight; Run's answer comes on the
// channel.
func startInFlight(ctx context.Context, t *testing.T, unit string) <-chan ran {
	t.Helper()
	res := make(chan ran, 1)
	go func() {
		out, err := systemd.Run(ctx, "user", "start", unit, nil)
		res <- ran{out, err}
	}()
	testenv.WaitUntil(t, 30*time.Second, "the start job is in flight", func() bool {
		out, _ := exec.Command("systemctl", "--user", "show", "-p", "Job", "--value", unit).Output()
		return strings.TrimSpace(string(out)) != ""
	})
	return res
}

// managerPids are testenv.UserManagerPids(name); it fails the test when
// there are none.
func managerPids(t *testing.T, name string) []int {
	t.Helper()
	out := testenv.UserManagerPids(name)
	if len(out) == 0 {
		t.Fatalf("no %s of this test found", name)
	}
	return out
}

// TestUserManagerReexecInAJob re-executes the user manager (systemctl
// --user daemon-reexec) while a start job of its is in flight: the new
// manager has another name on the bus but keeps the job, whose end then
// comes as a signal; Run must wait for it and say done, not take the
// job for lost.
func TestUserManagerReexecInAJob(t *testing.T) { onUserManager(t, reexecInAJobInside) }

func reexecInAJobInside(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	res := startInFlight(ctx, t, "gated@1.service")
	if out, err := exec.Command("systemctl", "--user", "daemon-reexec").CombinedOutput(); err != nil {
		t.Fatalf("daemon-reexec: %v: %s", err, out)
	}
	// Past the watch's polls in a row: a job taken for lost would have
	// been said by now.
	time.Sleep(5 * time.Second)
	if err := os.WriteFile(filepath.Join(os.Getenv("HOME"), "gate-1"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-res:
		if r.err != nil || r.out.JobResult != "done" || r.out.ActiveState != "active" {
			t.Errorf("start across a daemon-reexec: %+v %v; want done, active", r.out, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("start across a daemon-reexec still waits 30 s after its gate opened")
	}
}

// TestUserManagerSecondJobOfAUnitJoinsTheFirst: what a takeover during
// an action's D-Bus job can do to its unit. The worker frozen in its
// job loses the host; the successor records the run interrupted and may
// run the host's next action on the same unit while the first job is in
// flight. systemd keeps at most one job per unit: the second restart
// is the first job (same id), patched to run again, never a second job
// beside it, and both callers see its one end.
func TestUserManagerSecondJobOfAUnitJoinsTheFirst(t *testing.T) {
	onUserManager(t, secondJobInside)
}

func secondJobInside(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	const unit = "gated@7.service"
	restart := func() <-chan ran {
		res := make(chan ran, 1)
		go func() {
			out, err := systemd.Run(ctx, "user", "restart", unit, nil)
			res <- ran{out, err}
		}()
		return res
	}
	jobs := func() []string {
		out, _ := exec.Command("systemctl", "--user", "list-jobs", "--no-legend", unit).Output()
		return strings.Fields(strings.TrimSpace(string(out)))
	}
	first := restart()
	testenv.WaitUntil(t, 30*time.Second, "the first restart's job is in flight", func() bool { return len(jobs()) > 0 })
	firstJob := jobs()[0]
	second := restart()
	// The second call's job is queued within this; the unit must never
	// show two jobs meanwhile.
	for range 30 {
		if j := jobs(); len(j) > 0 && strings.Count(strings.Join(j, " "), unit) > 1 {
			t.Fatalf("two jobs for %s: %v", unit, j)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if j := jobs(); len(j) == 0 || j[0] != firstJob {
		t.Fatalf("jobs of %s after the second restart: %v, want the first's (%s) alone", unit, j, firstJob)
	}
	if err := os.WriteFile(filepath.Join(os.Getenv("HOME"), "gate-7"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var outs []systemd.Outcome
	for _, res := range []<-chan ran{first, second} {
		select {
		case r := <-res:
			if r.err != nil || r.out.JobResult != "done" || r.out.ActiveState != "active" {
				t.Errorf("restart: %+v %v; want done, active", r.out, r.err)
			}
			outs = append(outs, r.out)
		case <-time.After(30 * time.Second):
			t.Fatal("a restart still waits 30 s after its gate opened")
		}
	}
	if len(outs) == 2 && (outs[0].JobID != outs[1].JobID || strconv.Itoa(outs[0].JobID) != firstJob) {
		t.Errorf("job ids %d and %d, listed %s: want one job", outs[0].JobID, outs[1].JobID, firstJob)
	}
	t.Logf("outcomes: %+v", outs)
}

// refusingScript is setupScript's user manager behind a bus that refuses
// every RestartUnit call (a mandatory deny in the session bus's policy,
// on a tmpfs over /etc/dbus-1/session.d in the test's mount namespace):
// a real refusal of the call, as polkit's is on the system bus.
var refusingScript = testenv.UserManagerScript(`[ -d /etc/dbus-1/session.d ] || { echo "no /etc/dbus-1/session.d (scripts/ensure-dbus.sh)"; exit 1; }
mount -t tmpfs tmpfs /etc/dbus-1/session.d
printf '%s\n' '<busconfig><policy context="mandatory">' \
	'<deny send_destination="org.freedesktop.systemd1" send_interface="org.freedesktop.systemd1.Manager" send_member="RestartUnit"/>' \
	'</policy></busconfig>' > /etc/dbus-1/session.d/orderly-test-deny.conf
printf '[Unit]\nDescription=orderly test instance %%i\n[Service]\nExecStart=/bin/sleep infinity\n' \
	> "$HOME/.config/systemd/user/example@.service"`)

// TestUserManagerRefusalNamesThePolkitRule: the restart button's first
// run on a host whose polkit does not yet allow the worker's user ended
// failed with systemd's words alone ("Interactive authentication
// required."), which do not say what to do. A call the bus refuses now
// names the command that prints the rule allowing this action; a call
// refused for another reason (no such unit, TestUserManager) does not.
func TestUserManagerRefusalNamesThePolkitRule(t *testing.T) {
	if os.Getenv(innerEnv) != "1" {
		testenv.NeedRootTools(t, "a systemd user manager", "scripts/ensure-dbus.sh",
			"unshare", "dbus-daemon", "systemctl", "/lib/systemd/systemd")
		testenv.RerunInMountNamespace(t, refusingScript, nil, t.Name(), innerEnv)
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	// The bus lets the rest through: a start is queued and runs.
	if out, err := systemd.Run(ctx, "user", "start", "example@0042.service", nil); err != nil || out.JobResult != "done" {
		t.Fatalf("start: %+v %v", out, err)
	}
	c := config.Default()
	c.Actions.Bus = "user"
	c.Actions.Definitions = []config.Action{{Name: "restart-example", Hosts: []string{"*"}, Roles: []string{"ops"},
		Params:  []config.ActionParam{{Name: "id", Pattern: "[0-9]{4}"}},
		Systemd: config.ActionSystemd{Verb: "restart", Unit: "example@{id}.service"}}}
	hp, err := hostpolicy.FromConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	o := &order.Order{ID: order.NewID(), Kind: order.KindAction, Host: "h", Command: "action:restart-example",
		Action: &order.Action{Name: "restart-example", Params: map[string]string{"id": "0042"}}}
	prep, err := hp.Prepare(o)
	if err != nil || prep.Native == nil {
		t.Fatalf("prepare: %v", err)
	}
	res := prep.Native(ctx, nil)
	stderr := string(res.Stderr.Content)
	if res.StartErr != nil || res.ExitCode == nil || *res.ExitCode != 1 || len(res.Stdout.Content) != 0 {
		t.Fatalf("a refused restart: %+v, stderr %q; want exit 1, no outcome", res, stderr)
	}
	for _, want := range []string{"systemd: restart example@0042.service: ", "may not restart example@0042.service",
		"`orderly action polkit-rule restart-example`", "docs/actions.md#polkit"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr of a refused restart lacks %q: %q", want, stderr)
		}
	}
	t.Logf("stderr: %s", stderr)
}
