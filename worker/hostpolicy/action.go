package hostpolicy

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/orderly-run/orderly/internal/action"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/worker/executor"
	"github.com/orderly-run/orderly/worker/systemd"
)

// FromConfig is the whole host policy of a worker: its worker section,
// its runbook settings and its own actions. Actions that do not compile
// are an error, so a worker never runs with a partial set, and so is an
// action of this host (c.Host) whose command it could never resolve.
func FromConfig(c config.Config) (*Policy, error) {
	p, err := NewWithRunbooks(c.Worker, c.Runbooks)
	if err != nil {
		return nil, err
	}
	if p.actions, err = action.New(c.Actions); err != nil {
		return nil, fmt.Errorf("actions: %w", err)
	}
	if err := p.checkActionCommands(c.Host); err != nil {
		return nil, fmt.Errorf("actions: %w", err)
	}
	return p, nil
}

// Check tells, without building a policy (no cgroup probe), whether
// FromConfig would refuse what c's own validation lets through: its
// actions, and a default user this worker cannot become. It is the drift
// check's view of a reload.
func Check(c config.Config) error {
	set, err := action.New(c.Actions)
	if err != nil {
		return fmt.Errorf("actions: %w", err)
	}
	p := &Policy{actions: set, defaultUser: c.Worker.DefaultUser, useSudo: c.Worker.UseSudo, euid: os.Geteuid()}
	if _, p.commandPath, err = commandPathOf(c.Worker); err != nil {
		return err
	}
	if err := p.checkActionCommands(c.Host); err != nil {
		return fmt.Errorf("actions: %w", err)
	}
	p.self = selfUser(p.euid)
	return p.checkDefaultUser()
}

// checkActionCommands refuses an action of host whose command[0] is a
// path no command_path directory holds: it would load and then reject
// every run (resolve). A path in a listed directory loads even before its
// file is installed, as a bare name does. An action whose hosts leave
// host out is never run here: every worker gets the same actions block
// (docs/deploy.md), and another host's command_path may hold its command.
func (p *Policy) checkActionCommands(host string) error {
	for _, d := range p.actions.All() {
		if len(d.Command) == 0 || !d.AllowsHost(host) {
			continue
		}
		name, _ := d.Command[0].Render(nil) // fixed: no placeholders
		clean := filepath.Clean(name)
		if !filepath.IsAbs(name) || slices.Contains(p.commandPath, filepath.Dir(clean)) {
			continue
		}
		if _, ok := p.commandPathDir(clean); !ok {
			return fmt.Errorf("action %q: command[0] %q is not inside worker.command_path (%s): this host would refuse every run",
				d.Name, name, strings.Join(p.commandPath, ", "))
		}
	}
	return nil
}

// SystemdRunner runs a native verb; systemd.Run, or a stand-in in tests
// that must prove nothing reached D-Bus.
type SystemdRunner func(ctx context.Context, bus, verb, unit string, fence *systemd.Fence) (systemd.Outcome, error)

// SetSystemdRunner replaces how native verbs run (tests); call it before
// the policy is used.
func (p *Policy) SetSystemdRunner(r SystemdRunner) { p.systemdRun = r }

// prepareAction renders an action order from this worker's own config:
// the action must be one it knows, allowed on this host, and every value
// must pass its own param rules, whatever the API accepted. A command
// then runs like an exec order; a systemd verb becomes Prepared.Native.
func (p *Policy) prepareAction(o *order.Order) (*Prepared, error) {
	a := o.Action
	if a == nil {
		return nil, order.FieldError(order.CodeInvalid, "action", "the order carries no action")
	}
	d := p.actions.Lookup(a.Name)
	if d == nil {
		return nil, order.FieldError(order.CodeForbidden, "action", "this host's config has no action %q", order.Printable(a.Name))
	}
	if !d.AllowsHost(o.Host) {
		return nil, order.FieldError(order.CodeForbidden, "host", "this host's config does not allow action %s on host %s", d.Name, o.Host)
	}
	// Each value must come where this host's config puts it: a public
	// value sent as a secret would run without being in the order's
	// history (secrets are erased when it ends), and one in both maps
	// would run the secret one while history shows the other.
	for _, name := range slices.Sorted(maps.Keys(a.Secrets)) {
		if prm := d.Param(name); prm == nil || !prm.Secret {
			return nil, order.FieldError(order.CodeForbidden, "params", "action %s: param %q came as a secret, which this host's config does not make it", d.Name, order.Printable(name))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(a.Params)) {
		if prm := d.Param(name); prm != nil && prm.Secret {
			return nil, order.FieldError(order.CodeForbidden, "params", "action %s: secret param %s came in the order's history, not as a secret", d.Name, name)
		}
	}
	values := maps.Clone(a.Params)
	if values == nil {
		values = map[string]string{}
	}
	maps.Copy(values, a.Secrets)
	r, err := d.Render(values)
	if err != nil {
		return nil, err
	}
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = o.Timeout
	}
	if timeout <= 0 {
		timeout = order.DefaultLimits().DefaultTimeout
	}
	if r.Verb != "" {
		return p.prepareNative(d, r, timeout), nil
	}
	return p.prepareActionCommand(o, d, r, timeout)
}

// prepareNative is a systemd verb: no process, no shell; the worker waits
// for the job and records its result, the unit's new state and its
// invocation id as the order's stdout (JSON).
func (p *Policy) prepareNative(d *action.Def, r *action.Rendered, timeout time.Duration) *Prepared {
	run := p.systemdRun
	if run == nil {
		run = systemd.Run
	}
	bus := p.actions.Bus()
	return &Prepared{ResolvedPath: "systemd:" + r.Verb + ":" + r.Unit, Native: func(ctx context.Context, fence *systemd.Fence) executor.Result {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		start := time.Now()
		out, err := run(ctx, bus, r.Verb, r.Unit, fence)
		res := executor.Result{Duration: time.Since(start), GroupGone: true}
		body, _ := json.Marshal(out)
		res.Stdout, res.Stderr = textOutput(string(body)+"\n"), textOutput("")
		code := 0
		switch {
		case err != nil && ctx.Err() == context.DeadlineExceeded:
			// The job outlasted the timeout: the order ends timed out
			// with no exit code, as no process of its exited (an exit
			// code would say the job failed), and keeps the job's id;
			// the job itself stays systemd's.
			res.TimedOut = true
			res.Stderr = textOutput(err.Error() + "\n")
			return res
		case err != nil && ctx.Err() != nil:
			// The worker stopped and its shutdown grace passed while the
			// job ran: the order ends killed, as a process would, and
			// keeps the job's id; the job itself stays systemd's.
			res.Canceled = true
			res.Stderr = textOutput("systemd: " + err.Error() + "\n")
			return res
		case err != nil && out.JobID != 0:
			// A job whose end was not seen: the systemd that queued it
			// left the bus (killed, or the bus gone). A failure, with
			// the job's id on stdout and on stderr that whether it ran
			// is unknown; the host's queue goes on.
			code = 1
			res.Stderr = textOutput("systemd: " + err.Error() + "\n")
		case err != nil:
			// No job: systemd (or polkit) refused the call. A failure
			// like a failed job, with the reason instead of an outcome.
			code = 1
			why := "systemd: " + err.Error() + "\n"
			if systemd.Refused(err) {
				// The restart button's first run on a new host: the
				// worker's user may not manage the unit until polkit
				// lets it, and systemd's words do not say how.
				why += fmt.Sprintf("the worker's user (uid %d) may not %s %s: on the system bus polkit decides; "+
					"`orderly action polkit-rule %s` prints the rule that allows this action and no more (docs/actions.md#polkit)\n",
					os.Getuid(), r.Verb, r.Unit, d.Name)
			}
			res.Stdout, res.Stderr = textOutput(""), textOutput(why)
		case out.JobResult != "done":
			code = 1
			res.Stderr = textOutput(fmt.Sprintf("systemd job %d (%s %s) ended %q\n", out.JobID, r.Verb, r.Unit, out.JobResult))
		}
		res.ExitCode = &code
		return res
	}}
}

// textOutput is a captured stream holding s (no content at all for "").
func textOutput(s string) order.Output {
	sum := sha256.Sum256([]byte(s))
	out := order.Output{Bytes: int64(len(s)), SHA256: sum[:]}
	if s != "" {
		out.Content = []byte(s)
	}
	return out
}

// prepareActionCommand runs the rendered argv like an exec order: argv[0]
// resolved in command_path, the action's run_as (which this host must
// allow), a clean environment plus the action's env, the same limits and
// containment. worker.allow, deny and forbidden_chars govern what clients
// type, not the operator's own templates, so they do not apply.
func (p *Policy) prepareActionCommand(o *order.Order, d *action.Def, r *action.Rendered, timeout time.Duration) (*Prepared, error) {
	cmd, err := p.resolve(r.Argv[0])
	if err != nil {
		return nil, err
	}
	u, err := p.runAs(d.RunAs)
	if err != nil {
		return nil, err
	}
	home := u.home()
	env, err := p.environment(nil, order.KindAction, u.name, home)
	if err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(r.Env)) {
		// The config refuses such an action; a policy built from one
		// that was not validated must not run it either.
		if rule, denied := p.envDenied(name); denied {
			return nil, order.FieldError(order.CodeForbidden, "env",
				"action %s sets environment variable %s, which this host refuses (env_deny %q)", d.Name, name, rule)
		}
		env = slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, name+"=") })
		env = append(env, name+"="+r.Env[name])
	}
	dir := home
	if p.execRoot != "" {
		dir = p.execRoot
	}
	req := p.request(o, u, cmd.realPath, slices.Clone(r.Argv), env, dir, timeout, p.maxOutput)
	// A secret the command prints (an error quoting its input, a trace)
	// would be in the order's output for whoever reads it (an auditor),
	// live and kept. Values of bool and enum params are listed in the
	// config, public, and would mask every "true" of the output.
	for _, name := range slices.Sorted(maps.Keys(o.Action.Secrets)) {
		if prm := d.Param(name); prm.Type != action.TypeBool && prm.Type != action.TypeEnum {
			req.Secrets = append(req.Secrets, o.Action.Secrets[name])
		}
	}
	if u.sudo {
		if len(r.Env) > 0 {
			// sudo resets the environment: the action's env (secrets
			// included) would be dropped silently.
			return nil, order.FieldError(order.CodeUnprocessable, "run_as",
				"action %s sets env, which reaches a command run as %s only from a worker running as root (sudo resets it)", d.Name, u.name)
		}
		sudo, err := p.lookup("sudo")
		if err != nil {
			return nil, order.FieldError(order.CodeUnprocessable, "run_as",
				"running as %s needs sudo, which is not in this host's command_path", u.name)
		}
		// sudo -n never prompts; -- ends its options whatever argv holds.
		req.Path = sudo.realPath
		req.Argv = append([]string{"sudo", "-n", "-u", u.name, "--", cmd.resolvedPath}, r.Argv[1:]...)
	}
	return &Prepared{Req: req, ResolvedPath: cmd.resolvedPath, User: u.name}, nil
}

// UnitLister lists a bus's units matching a glob: systemd.ListUnits, or
// a stand-in in tests.
type UnitLister func(ctx context.Context, bus, glob string) ([]systemd.Unit, error)

// SetUnitLister replaces how unit choices are listed (tests); call it
// before the policy is used.
func (p *Policy) SetUnitLister(l UnitLister) { p.listUnits = l }

// UnitChoices lists this host's units matching glob, which must be the
// units glob of a param of one of this worker's own actions: whoever asks
// over the bus, the worker lists nothing its config does not offer.
func (p *Policy) UnitChoices(ctx context.Context, glob string) ([]systemd.Unit, error) {
	offered := false
	for _, d := range p.actions.All() {
		for _, prm := range d.Params {
			offered = offered || (prm.Units != "" && prm.Units == glob)
		}
	}
	if !offered {
		return nil, fmt.Errorf("this host's config offers no unit choices for %q", order.Printable(glob))
	}
	list := p.listUnits
	if list == nil {
		list = systemd.ListUnits
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return list(ctx, p.actions.Bus(), glob)
}
