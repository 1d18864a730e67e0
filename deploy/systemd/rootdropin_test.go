package systemd_test

import (
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker/executor"
)

// Environment of the runs of this test binary that are not the test: the
// one inside the mount namespace, and the probe the unit starts there.
const (
	rootDropInInner = "ORDERLY_ROOT_DROPIN_INNER"
	rootDropInProbe = "ORDERLY_ROOT_DROPIN_PROBE"
	rootDropInBits  = "ORDERLY_ROOT_DROPIN_SECUREBITS"

	prGetSecurebits = 27 // prctl(2) PR_GET_SECUREBITS
	// SECBIT_NOROOT and SECBIT_NOROOT_LOCKED: uid 0 gets no capabilities
	// from being uid 0, and no process can undo that.
	securebitsNoroot = 1<<0 | 1<<1
)

// managerScript is testenv.UserManagerScript's user manager of root.
// Run by root, the manager may start a unit as User=root with every
// setting of the worker's unit that confines a process's credentials
// and system calls.
var managerScript = testenv.UserManagerScript("")

// TestWorkerRootDropIn: docs/deploy.md's root.conf drop-in is how orders
// run as other users (run_as). The worker's unit filters out @privileged,
// which holds setuid, setgroups and fchown (the executor gives the
// order's user its pipes), and the drop-in neither put them back nor kept
// CAP_CHOWN: every order naming a user failed, "start: operation not
// permitted". Here the unit, with the drop-in as deploy.md prints it,
// starts a probe (this binary) that runs a process as nobody with the
// worker's executor.
// The settings that need mounts are turned off for the probe: this
// machine may not allow them in a nested namespace, and they do not
// touch credentials.
func TestWorkerRootDropIn(t *testing.T) {
	if out := os.Getenv(rootDropInProbe); out != "" {
		rootDropInProbeRun(t, out)
		return
	}
	if os.Getenv(rootDropInInner) == "1" {
		rootDropInInside(t)
		return
	}
	testenv.NeedRootTools(t, "a systemd user manager", "scripts/ensure-dbus.sh",
		"unshare", "dbus-daemon", "systemctl", "/lib/systemd/systemd")
	testenv.RerunInMountNamespace(t, managerScript, nil, "TestWorkerRootDropIn", rootDropInInner)
}

// rootDropInProbeRun is the unit's process: with the worker's executor,
// it runs id as nobody (uid and gid 65534, no supplementary groups) and
// writes what it printed, or why it could not start it, to out.
func rootDropInProbeRun(t *testing.T, out string) {
	if os.Getenv(rootDropInBits) == "1" {
		bits, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prGetSecurebits, 0, 0)
		b := []byte(strconv.FormatUint(uint64(bits), 10))
		if errno != 0 {
			b = []byte("error: " + errno.Error())
		}
		if err := os.WriteFile(out, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	res := executor.New(slog.Default()).Run(t.Context(), executor.Request{Path: "/usr/bin/id", Argv: []string{"id", "-u"},
		Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, Timeout: 10 * time.Second, MaxOutput: 1024,
		CaptureStdout: true, CaptureStderr: true}, nil)
	b := res.Stdout.Content
	if res.StartErr != nil {
		b = []byte("error: " + res.StartErr.Error())
	}
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func rootDropInInside(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	unitDir := filepath.Join(os.Getenv("HOME"), ".config/systemd/user")
	dropIns := filepath.Join(unitDir, "orderly-worker.service.d")
	if err := os.MkdirAll(dropIns, 0o755); err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile("orderly-worker.service")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "probe.out")
	probe := strings.Join([]string{"[Service]", "Type=oneshot", "Restart=no",
		"ExecStart=", "ExecStart=" + self + " -test.run=^TestWorkerRootDropIn$",
		"Environment=" + rootDropInProbe + "=" + out,
		"ProtectSystem=no", "ProtectHome=no", "PrivateTmp=no", "PrivateDevices=no", "PrivateMounts=no",
		"ProtectKernelTunables=no", "ProtectKernelModules=no", "ProtectKernelLogs=no", "ProtectClock=no",
		"ProtectHostname=no", ""}, "\n")
	for name, body := range map[string]string{
		filepath.Join(unitDir, "orderly-worker.service"): string(unit),
		filepath.Join(dropIns, "root.conf"):              documentedRootDropIn(t),
		filepath.Join(dropIns, "zz-probe.conf"):          probe,
	} {
		if err := os.WriteFile(name, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	systemctl := func(args ...string) ([]byte, error) {
		return exec.Command("systemctl", append([]string{"--user"}, args...)...).CombinedOutput()
	}
	if b, err := systemctl("daemon-reload"); err != nil {
		t.Fatalf("daemon-reload: %v\n%s", err, b)
	}
	b, err := systemctl("start", "orderly-worker.service")
	got, _ := os.ReadFile(out)
	if err != nil {
		status, _ := systemctl("status", "--no-pager", "orderly-worker.service")
		t.Fatalf("the worker's unit with root.conf could not start a process as nobody: %v\n%s\nprobe: %s\n%s", err, b, got, status)
	}
	if strings.TrimSpace(string(got)) != "65534" {
		t.Fatalf("the probe printed %q, want 65534 (nobody)", got)
	}

	// The unit alone keeps a process that is uid 0 from holding
	// capabilities for it (SecureBits=noroot noroot-locked; the lock bit
	// alone locked noroot off). Here the probe runs as root under the unit
	// without root.conf, which resets the bits for the worker it makes
	// root.
	if err := os.Remove(filepath.Join(dropIns, "root.conf")); err != nil {
		t.Fatal(err)
	}
	asRoot := probe + strings.Join([]string{"User=root", "Group=root", "Environment=" + rootDropInBits + "=1", ""}, "\n")
	if err := os.WriteFile(filepath.Join(dropIns, "zz-probe.conf"), []byte(asRoot), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := systemctl("daemon-reload"); err != nil {
		t.Fatalf("daemon-reload: %v\n%s", err, b)
	}
	b, err = systemctl("start", "orderly-worker.service")
	got, _ = os.ReadFile(out)
	if err != nil {
		t.Fatalf("the worker's unit could not start the probe: %v\n%s\nprobe: %s", err, b, got)
	}
	if bits, err := strconv.Atoi(strings.TrimSpace(string(got))); err != nil || bits&securebitsNoroot != securebitsNoroot {
		t.Fatalf("securebits of a root process under the worker's unit: %q, want noroot and noroot-locked (%#x) set", got, securebitsNoroot)
	}
}

// documentedRootDropIn returns the root.conf block of docs/deploy.md.
func documentedRootDropIn(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	const head = "```ini\n# /etc/systemd/system/orderly-worker.service.d/root.conf\n"
	_, rest, ok := strings.Cut(string(b), head)
	block, _, closed := strings.Cut(rest, "```")
	if !ok || !closed {
		t.Fatal(errors.New("docs/deploy.md has no root.conf block"))
	}
	return block
}
