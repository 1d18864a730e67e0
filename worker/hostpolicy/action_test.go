package hostpolicy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/worker/executor"
	"github.com/orderly-run/orderly/worker/systemd"
)

func actionPolicy(t *testing.T, defs ...config.Action) (*Policy, *int) {
	t.Helper()
	c := config.Default()
	c.Worker.CommandPath = []string{"/usr/bin", "/bin"}
	c.Actions.Definitions = defs
	p, err := FromConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	calls := new(int)
	p.SetSystemdRunner(func(ctx context.Context, bus, verb, unit string, _ *systemd.Fence) (systemd.Outcome, error) {
		*calls++
		return systemd.Outcome{Unit: unit, Verb: verb, JobResult: "done", ActiveState: "active"}, nil
	})
	return p, calls
}

var restartDef = config.Action{Name: "restart", Hosts: []string{"web-*"}, Roles: []string{"ops"},
	Params:  []config.ActionParam{{Name: "id", Pattern: "[0-9]{4}"}},
	Systemd: config.ActionSystemd{Verb: "restart", Unit: "example@{id}.service"}}

func actionOrder(host, name string, params map[string]string) *order.Order {
	return &order.Order{ID: order.NewID(), Kind: order.KindAction, Host: host, Command: "action:" + name,
		Action: &order.Action{Name: name, Params: params}, CaptureStdout: true, CaptureStderr: true}
}

// TestWorkerRefusesWhatItsConfigDoesNot: the API's config may allow
// more than the worker's (another version, a compromised API); the worker
// renders from its own, and refuses an action it does not know, a host it
// does not allow or a value its rules refuse. A refused native verb never
// reaches D-Bus.
func TestWorkerRefusesWhatItsConfigDoesNot(t *testing.T) {
	p, calls := actionPolicy(t, restartDef)
	cases := map[string]*order.Order{
		"unknown action":       actionOrder("web-1", "reboot", map[string]string{"id": "0042"}),
		"host not allowed":     actionOrder("db-1", "restart", map[string]string{"id": "0042"}),
		"value fails pattern":  actionOrder("web-1", "restart", map[string]string{"id": "42"}),
		"value injects":        actionOrder("web-1", "restart", map[string]string{"id": "0042.service dbus"}),
		"value traverses":      actionOrder("web-1", "restart", map[string]string{"id": "../../x"}),
		"value with a newline": actionOrder("web-1", "restart", map[string]string{"id": "0042\n"}),
		"unknown param":        actionOrder("web-1", "restart", map[string]string{"id": "0042", "unit": "dbus.service"}),
		"missing param":        actionOrder("web-1", "restart", nil),
		"no action":            {ID: order.NewID(), Kind: order.KindAction, Host: "web-1", Command: "action:x"},
	}
	for name, o := range cases {
		prep, err := p.Prepare(o)
		if err == nil {
			t.Errorf("%s: prepared %+v", name, prep)
			continue
		}
		if c := order.ErrorCode(err); c == order.CodeInternal {
			t.Errorf("%s: %v is not an order error", name, err)
		}
	}
	if *calls != 0 {
		t.Errorf("refused orders reached D-Bus %d times", *calls)
	}

	prep, err := p.Prepare(actionOrder("web-1", "restart", map[string]string{"id": "0042"}))
	if err != nil || prep.Native == nil {
		t.Fatalf("a valid run: %v %+v", err, prep)
	}
	res := prep.Native(t.Context(), nil)
	if *calls != 1 || res.ExitCode == nil || *res.ExitCode != 0 || !strings.Contains(string(res.Stdout.Content), `"unit":"example@0042.service"`) {
		t.Errorf("native run: calls %d, exit %v, stdout %s", *calls, res.ExitCode, res.Stdout.Content)
	}
}

// TestActionEnvDenied: an action's env may not set what env_deny refuses
// every order, even in a config that was never validated.
func TestActionEnvDenied(t *testing.T) {
	p, _ := actionPolicy(t, config.Action{Name: "preload", Hosts: []string{"*"}, Roles: []string{"ops"},
		Params:  []config.ActionParam{{Name: "lib", Pattern: "[a-z/.]+"}},
		Command: []string{"true"}, Env: []config.ActionEnv{{Name: "LD_PRELOAD", Value: "{lib}"}}})
	_, err := p.Prepare(actionOrder("web-1", "preload", map[string]string{"lib": "/tmp/x.so"}))
	if order.ErrorCode(err) != order.CodeForbidden || !strings.Contains(fmt.Sprint(err), "LD_PRELOAD") {
		t.Fatalf("Prepare = %v, want forbidden naming LD_PRELOAD", err)
	}
}

// TestActionCommandRuns renders a command action and runs it through the
// real executor: each value is exactly one argv element, the secret
// reaches the command's environment only (its hash says it came), and
// the command's output shows it masked.
func TestActionCommandRuns(t *testing.T) {
	p, _ := actionPolicy(t, config.Action{Name: "show", Hosts: []string{"*"}, Principals: []string{"*"},
		Params:  []config.ActionParam{{Name: "word", Pattern: "[a-z ]+"}, {Name: "pw", Pattern: "[a-z0-9]+", Secret: true}},
		Command: []string{"/bin/sh", "-c", `printf '%s|' "$@" "$PW"; printf '%s' "$PW" | sha256sum | cut -c1-64`, "sh", "{word}", "x{word}y"},
		Env:     []config.ActionEnv{{Name: "PW", Value: "{pw}"}}})
	o := actionOrder("h", "show", map[string]string{"word": "a b"})
	o.Action.Secrets = map[string]string{"pw": "hunter2"}
	prep, err := p.Prepare(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range prep.Req.Argv {
		if strings.Contains(a, "hunter2") {
			t.Fatalf("secret in argv %q", prep.Req.Argv)
		}
	}
	res := executor.New(nil).Run(t.Context(), prep.Req, nil)
	sum := sha256.Sum256([]byte("hunter2"))
	if got, want := string(res.Stdout.Content), "a b|xa by|*******|"+hex.EncodeToString(sum[:])+"\n"; got != want {
		t.Errorf("stdout %q, want %q (stderr %q, %v)", got, want, res.Stderr.Content, res.StartErr)
	}
}

// TestNativeVerbCutByTheWorkersStop: a systemd job still running when the
// worker's shutdown grace passes (its context ends) ends the order killed,
// as a process is, with the job's id kept: not failed with exit code 1,
// which says the job failed. A job that outlasts the action's timeout
// ends it timed out, with no exit code either.
func TestNativeVerbCutByTheWorkersStop(t *testing.T) {
	p, _ := actionPolicy(t, restartDef)
	p.SetSystemdRunner(func(ctx context.Context, bus, verb, unit string, _ *systemd.Fence) (systemd.Outcome, error) {
		<-ctx.Done() // a job that does not end
		return systemd.Outcome{Unit: unit, Verb: verb, JobID: 77},
			fmt.Errorf("%s %s: waiting for job 77: %w", verb, unit, ctx.Err())
	})
	prep, err := p.Prepare(actionOrder("web-1", "restart", map[string]string{"id": "0042"}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	stop()
	res := prep.Native(ctx, nil)
	if !res.Canceled || res.TimedOut || res.ExitCode != nil || !strings.Contains(string(res.Stdout.Content), `"job_id":77`) {
		t.Errorf("stopped worker: canceled %v, timed out %v, exit %v, stdout %q: want canceled, no exit code, the job's id",
			res.Canceled, res.TimedOut, res.ExitCode, res.Stdout.Content)
	}

	timed, _ := actionPolicy(t, config.Action{Name: "restart", Hosts: []string{"*"}, Roles: []string{"ops"}, Timeout: 50 * time.Millisecond,
		Params: restartDef.Params, Systemd: restartDef.Systemd})
	timed.SetSystemdRunner(func(ctx context.Context, bus, verb, unit string, _ *systemd.Fence) (systemd.Outcome, error) {
		<-ctx.Done()
		return systemd.Outcome{Unit: unit, Verb: verb, JobID: 78}, fmt.Errorf("waiting for job 78: %w", ctx.Err())
	})
	if prep, err = timed.Prepare(actionOrder("web-1", "restart", map[string]string{"id": "0042"})); err != nil {
		t.Fatal(err)
	}
	if res := prep.Native(t.Context(), nil); !res.TimedOut || res.Canceled || res.ExitCode != nil || !strings.Contains(string(res.Stdout.Content), `"job_id":78`) {
		t.Errorf("job past the timeout: timed out %v, canceled %v, exit %v, stdout %q: want timed out, no exit code, the job's id",
			res.TimedOut, res.Canceled, res.ExitCode, res.Stdout.Content)
	}
}

// TestWorkerTakesValuesOnlyWhereItsConfigPutsThem: what ran must be what
// the order's history shows. A public value sent among the secrets (which
// are erased when the order ends), a value in both maps (the secret one
// would run, history would show the other) and a secret among the public
// values are refused, like any value the worker's own rules refuse.
func TestWorkerTakesValuesOnlyWhereItsConfigPutsThem(t *testing.T) {
	show := config.Action{Name: "show", Hosts: []string{"*"}, Principals: []string{"*"},
		Params:  []config.ActionParam{{Name: "word", Pattern: "[a-z]+"}, {Name: "pw", Pattern: "[a-z0-9]+", Secret: true}},
		Command: []string{"/bin/echo", "{word}"}, Env: []config.ActionEnv{{Name: "PW", Value: "{pw}"}}}
	p, calls := actionPolicy(t, restartDef, show)
	cases := map[string]struct {
		name            string
		params, secrets map[string]string
	}{
		"public value as a secret": {"restart", nil, map[string]string{"id": "0043"}},
		"value in both maps":       {"restart", map[string]string{"id": "0042"}, map[string]string{"id": "0043"}},
		"unknown secret":           {"show", map[string]string{"word": "a"}, map[string]string{"pw": "x", "other": "y"}},
		"secret in history":        {"show", map[string]string{"word": "a", "pw": "hunter2"}, nil},
	}
	for name, c := range cases {
		o := actionOrder("web-1", c.name, c.params)
		o.Action.Secrets = c.secrets
		if prep, err := p.Prepare(o); err == nil {
			t.Errorf("%s: prepared %+v", name, prep)
		} else if order.ErrorCode(err) == order.CodeInternal || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if *calls != 0 {
		t.Errorf("refused orders reached D-Bus %d times", *calls)
	}
	o := actionOrder("web-1", "show", map[string]string{"word": "a"})
	o.Action.Secrets = map[string]string{"pw": "hunter2"}
	if _, err := p.Prepare(o); err != nil {
		t.Errorf("values where the config puts them: %v", err)
	}
}

// TestActionCommandOutsideCommandPath: an action whose command[0] is an
// absolute path this host's command_path does not hold is refused when
// the policy is built (start and reload) and by the drift check, naming
// the action and the path, instead of loading and then rejecting every
// run. A path in a
// command_path directory loads, spelled as listed or through a link to
// one (/bin where it links to /usr/bin, as resolve accepts at run time).
func TestActionCommandOutsideCommandPath(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	def := func(name, cmd string) config.Action {
		return config.Action{Name: name, Hosts: []string{"*"}, Roles: []string{"ops"}, Command: []string{cmd}}
	}
	c := config.Default()
	c.Worker.CommandPath = []string{real, "/usr/bin"}
	for _, ok := range []config.Action{def("listed", real+"/tool"), def("linked", dir+"/link/tool"),
		def("bare", "tool"), def("not-yet-made", "/usr/bin/orderly-no-such-tool")} {
		c.Actions.Definitions = []config.Action{ok}
		if _, err := FromConfig(c); err != nil {
			t.Errorf("%s (%s): %v", ok.Name, ok.Command[0], err)
		}
		if err := Check(c); err != nil {
			t.Errorf("%s (%s): the drift check says %v", ok.Name, ok.Command[0], err)
		}
	}
	for _, bad := range []config.Action{def("rotate", "/opt/app/bin/rotate"), def("sub", real+"/sub/tool"),
		def("parent", dir+"/tool")} {
		c.Actions.Definitions = []config.Action{def("fine", "tool"), bad}
		_, err := FromConfig(c)
		if err == nil || !strings.Contains(err.Error(), `action "`+bad.Name+`"`) ||
			!strings.Contains(err.Error(), bad.Command[0]) || !strings.Contains(err.Error(), "worker.command_path") {
			t.Errorf("%s (%s): %v; want refused, naming the action, the path and worker.command_path", bad.Name, bad.Command[0], err)
		}
		if check := Check(c); fmt.Sprint(check) != fmt.Sprint(err) {
			t.Errorf("%s: the drift check says %v, the reload %v", bad.Name, check, err)
		}
	}
}

// TestActionCommandOfAnotherHostLoads: every worker gets the same
// actions block (docs/deploy.md), and command_path differs per host. An
// action whose hosts leave this worker out is never run here, so a
// command of its outside this host's command_path does not refuse the
// config; on a host it names, it does.
func TestActionCommandOfAnotherHostLoads(t *testing.T) {
	c := config.Default()
	c.Worker.CommandPath = []string{"/usr/bin"}
	c.Actions.Definitions = []config.Action{{Name: "backup", Hosts: []string{"db-*"}, Roles: []string{"ops"},
		Command: []string{"/opt/db/bin/backup"}}}
	c.Host = "web-1"
	if _, err := FromConfig(c); err != nil {
		t.Errorf("web-1 with db-*'s action: %v", err)
	}
	if err := Check(c); err != nil {
		t.Errorf("web-1 with db-*'s action: the drift check says %v", err)
	}
	c.Host = "db-1"
	if _, err := FromConfig(c); err == nil || !strings.Contains(err.Error(), `action "backup"`) {
		t.Errorf("db-1 with its own action outside command_path: %v, want refused", err)
	}
	if err := Check(c); err == nil {
		t.Error("db-1 with its own action outside command_path: the drift check passes it")
	}
}
