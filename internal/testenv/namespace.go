package testenv

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// NeedRootTools fails the test under CI=true, and skips it elsewhere,
// unless it runs as root and finds every one of tools (a name on PATH, or
// a path): the message is "<purpose> needs <what is missing> (<hint>)".
// CI must have everything; a developer's machine may lack it.
func NeedRootTools(t testing.TB, purpose, hint string, tools ...string) {
	t.Helper()
	var missing []string
	for _, bin := range tools {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if len(missing) > 0 {
		msg := purpose + " needs " + strings.Join(missing, ", ") + " (" + hint + ")"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// RerunInMountNamespace runs the test name of this test binary again in a
// private mount namespace (unshare -m), where the shell script setup first
// mounts what the test needs and then execs its last arguments: setup gets
// args, then the binary with the flags that run name alone. The inner run
// has innerEnv=1 in its environment, so the test knows to do its part
// there. The inner output is logged; the test fails unless it passed.
func RerunInMountNamespace(t *testing.T, setup string, args []string, name, innerEnv string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	argv := append([]string{"-m", "--propagation", "private", "sh", "-c", setup, "sh"}, args...)
	argv = append(argv, self, "-test.run", "^"+name+"$", "-test.v", "-test.count=1")
	cmd := exec.CommandContext(ctx, "unshare", argv...)
	cmd.Env = append(os.Environ(), innerEnv+"=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	t.Logf("inside the namespace:\n%s", out.String())
	if err != nil {
		t.Fatalf("%s inside the namespace failed: %v", name, err)
	}
	if !strings.Contains(out.String(), "--- PASS: "+name) {
		t.Fatalf("%s inside the namespace did not pass", name)
	}
}

// UserManagerScript is a setup for RerunInMountNamespace that starts a
// real systemd user manager of root in the private mount namespace (a
// tmpfs on /run/systemd, so this machine's systemd state is untouched;
// /run/systemd/system marks systemd as booted) with its own session bus,
// runs "$@" against it and stops both. units runs first, in a shell
// whose $HOME/.config/systemd/user exists: it may write unit files
// there. It waits for the manager by asking it, up to 10 s. At the end it
// kills whatever is left in the manager's cgroup: a manager its test
// killed cannot stop its units.
func UserManagerScript(units string) string {
	return `set -eu
mkdir -p /run/systemd
mount -t tmpfs tmpfs /run/systemd
mkdir -p /run/systemd/system
D=$(mktemp -d)
chmod 700 "$D"
export XDG_RUNTIME_DIR="$D/run" HOME="$D/home"
mkdir -p -m 700 "$XDG_RUNTIME_DIR"
mkdir -p "$HOME/.config/systemd/user"
` + units + `
# Children of this shell (no --fork), so that it reaps them at the end.
# A cgroup of the manager's own on each hierarchy systemd uses. Started
# in the machine's /init.scope, a user manager takes the hierarchy's root
# for its own and, as it stops, removes every empty cgroup below it, on
# the unified hierarchy too: other tests' order cgroups, cgroup parents
# and the workers' probes, made that moment by test binaries running
# beside this one.
CG=orderly-usermanager-$$
for h in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
	if [ -f "$h/cgroup.procs" ] && mkdir "$h/$CG" 2>/dev/null; then echo $$ > "$h/$CG/cgroup.procs"; fi
done
dbus-daemon --session --address="unix:path=$XDG_RUNTIME_DIR/bus" --nofork --print-address > "$D/dbus.address" &
DB=$!
export DBUS_SESSION_BUS_ADDRESS="unix:path=$XDG_RUNTIME_DIR/bus"
for _ in $(seq 100); do [ -S "$XDG_RUNTIME_DIR/bus" ] && break; sleep 0.1; done
/lib/systemd/systemd --user > "$D/systemd.log" 2>&1 &
SD=$!
cleanup() {
	kill "$SD" "$DB" 2>/dev/null || true; wait "$SD" "$DB" 2>/dev/null || true
	for h in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
		[ -d "$h/$CG" ] || continue
		echo $$ > "$h/cgroup.procs" 2>/dev/null || true
		# What a manager that its test SIGKILLed left running: its units'
		# processes, the bus its dbus.socket started among them.
		for _ in $(seq 50); do
			left=$(find "$h/$CG" -name cgroup.procs -exec cat {} + 2>/dev/null)
			[ -n "$left" ] || break
			kill -9 $left 2>/dev/null || true
			sleep 0.1
		done
		find "$h/$CG" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
}
trap cleanup EXIT
for _ in $(seq 100); do
	st=$(systemctl --user is-system-running 2>/dev/null || true)
	[ "$st" = running ] || [ "$st" = degraded ] && break
	sleep 0.1
done
systemctl --user is-system-running || { cat "$D/systemd.log"; exit 1; }
"$@"
`
}

// UserManagerPids lists the processes named name (the base of argv[0]:
// "systemd", "dbus-daemon") that belong to this test's user manager
// (UserManagerScript): the ones whose XDG_RUNTIME_DIR is this process's,
// as other tests' managers run beside it in their own namespaces. The
// test's bus is two dbus-daemons: the script's, and the one the manager's
// dbus.socket starts on the same path, which clients reach once the
// manager runs.
func UserManagerPids(name string) []int {
	want := "XDG_RUNTIME_DIR=" + os.Getenv("XDG_RUNTIME_DIR")
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		cmd, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		argv0, _, _ := strings.Cut(string(cmd), "\x00")
		if err != nil || filepath.Base(argv0) != name {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err == nil && slices.Contains(strings.Split(string(env), "\x00"), want) {
			pid, _ := strconv.Atoi(e.Name())
			out = append(out, pid)
		}
	}
	return out
}

// InTimeNamespace starts a process in a time namespace of its own, whose
// boottime is offset by boottime seconds (unshare --time), and returns
// its pid and its start time as it reads them itself: in clock ticks
// since its own boot, the offset included, as its Self would record it.
// The process sleeps until the test ends, then is killed with its group.
func InTimeNamespace(t testing.TB, boottime string) (pid int, start uint64) {
	t.Helper()
	cmd := exec.Command("unshare", "--time", "--boottime", boottime, "--kill-child", "sh", "-c",
		`echo $$ $(cut -d' ' -f22 /proc/$$/stat); exec sleep 600`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); <-done })
	line := make(chan string, 1)
	go func() { s, _ := bufio.NewReader(out).ReadString('\n'); line <- s }()
	select {
	case s := <-line:
		if _, err := fmt.Sscan(s, &pid, &start); err != nil {
			t.Fatalf("the process in its time namespace said %q: %v", s, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the process in its time namespace did not say its pid and start")
	}
	return pid, start
}
