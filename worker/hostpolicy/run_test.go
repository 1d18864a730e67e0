package hostpolicy

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/worker/executor"
)

// systemPolicy is a policy over this host's real /usr/bin and /bin.
func systemPolicy(t *testing.T, mutate func(*config.Worker)) *Policy {
	t.Helper()
	cfg := config.Default().Worker
	cfg.CommandPath = []string{"/usr/bin", "/bin"}
	if mutate != nil {
		mutate(&cfg)
	}
	return newPolicy(t, cfg)
}

func run(t *testing.T, p *Policy, o *order.Order) (executor.Result, *Prepared) {
	t.Helper()
	// An order of its own: its cgroup is named after its id (worker.cgroup
	// auto makes one here as root without systemd), and a Run whose cgroup
	// exists ends what is in it first, as an earlier attempt's. Orders
	// left at the nil id killed each other's processes when these tests
	// ran in parallel (SIGKILL, no exit code).
	if o.ID == uuid.Nil {
		o.ID = order.NewID()
	}
	o.CaptureStdout, o.CaptureStderr = true, true
	prep, err := p.Prepare(o)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	res := executor.New(nil).Run(t.Context(), prep.Req, nil)
	if res.StartErr != nil || res.ExitCode == nil || *res.ExitCode != 0 {
		t.Fatalf("run %s: StartErr %v exit %v signal %q timed out %v canceled %v aborted %v group gone %v stderr %q", prep.ResolvedPath, res.StartErr, res.ExitCode, res.Signal, res.TimedOut, res.Canceled, res.Aborted, res.GroupGone, res.Stderr.Content)
	}
	return res, prep
}

// TestChildEnvIsClean runs /usr/bin/env through the executor: the child
// sees exactly the policy's environment and nothing of the worker's own.
func TestChildEnvIsClean(t *testing.T) {
	// Not parallel: t.Setenv.
	t.Setenv("ORDERLY_HOSTPOLICY_CANARY", "leaked")
	t.Setenv("LD_PRELOAD", "") // even an empty one must not pass through
	res, prep := run(t, systemPolicy(t, nil), &order.Order{Command: "env", Env: map[string]string{"FOO": "bar"}})

	got := strings.Split(strings.TrimSuffix(string(res.Stdout.Content), "\n"), "\n")
	if !slices.Equal(got, prep.Req.Env) {
		t.Errorf("child env =\n%q\nwant exactly\n%q", got, prep.Req.Env)
	}
	names := make([]string, 0, len(got))
	for _, kv := range got {
		name, _, _ := strings.Cut(kv, "=")
		names = append(names, name)
	}
	if want := []string{"FOO", "HOME", "LANG", "LOGNAME", "PATH", "USER"}; !slices.Equal(names, want) {
		t.Errorf("child env names %q, want %q", names, want)
	}
	for _, kv := range os.Environ() {
		if slices.Contains(prep.Req.Env, kv) {
			continue // the same value by construction (HOME=/root, say)
		}
		if slices.Contains(got, kv) {
			t.Errorf("the worker's %q leaked into the child", kv)
		}
	}
	if strings.Contains(string(res.Stdout.Content), "ORDERLY_HOSTPOLICY_CANARY") {
		t.Error("the canary leaked")
	}
	if !slices.Contains(got, "PATH=/usr/bin:/bin") {
		t.Errorf("PATH is not the command_path: %q", got)
	}
}

// TestRunAsNobodyEndToEnd prepares an order for nobody and runs it: the
// process has nobody's uid and groups, and none of root's.
func TestRunAsNobodyEndToEnd(t *testing.T) {
	needRoot(t)
	t.Parallel()
	p := systemPolicy(t, func(w *config.Worker) { w.AllowedUsers = []string{"nobody", "postgres"} })
	for _, name := range []string{"nobody", "postgres"} {
		want, err := exec.Command("id", name).Output() // the system's own view
		if err != nil {
			continue
		}
		t.Run(name, func(t *testing.T) {
			res, _ := run(t, p, &order.Order{Command: "id", RunAs: name})
			if string(res.Stdout.Content) != string(want) {
				t.Errorf("id as %s = %q, want %q", name, res.Stdout.Content, want)
			}
		})
	}
}

// TestArgv0IsTheRequestedName checks argv[0] survives symlink resolution:
// the executor runs the real file (sh is a link to dash on Debian) under the
// requested name, which is what a multi-call binary dispatches on.
func TestArgv0IsTheRequestedName(t *testing.T) {
	t.Parallel()
	res, prep := run(t, systemPolicy(t, nil), &order.Order{Command: "sh", Args: []string{"-c", `tr '\0' ' ' < /proc/$$/cmdline`}})
	if got := string(res.Stdout.Content); !strings.HasPrefix(got, "sh -c ") {
		t.Errorf("the process's argv = %q, want it to start with the requested name sh", got)
	}
	real, err := filepath.EvalSymlinks("/usr/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	if prep.Req.Path != real || prep.ResolvedPath != "/usr/bin/sh" {
		t.Errorf("Path %s ResolvedPath %s, want %s /usr/bin/sh", prep.Req.Path, prep.ResolvedPath, real)
	}
}
