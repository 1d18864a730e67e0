// Package hostpolicy is the worker's own check of an order (DESIGN §4.4,
// §4.5). Whatever the API allowed, the worker trusts nothing it did not check
// itself: it resolves the command through its command_path (never a shell),
// contains it in exec_root, applies its own allow and deny rules, forbidden
// characters, user rules and environment rules, and builds the clean
// executor.Request it will run. A refusal is an *order.Error; the worker
// records it as status rejected.
package hostpolicy

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/action"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/worker/executor"
	"github.com/orderly-run/orderly/worker/systemd"
)

// Policy is a worker's host policy, compiled from config.Worker. It is
// read-only after New, so one Policy may serve concurrent Prepare calls.
type Policy struct {
	commandPath  []string // cleaned absolute dirs, in lookup order
	pathVar      string   // "PATH=" and commandPath, the child's PATH
	execRoot     string   // cleaned absolute, or "" when not set
	followLinks  bool
	allow, deny  []*regexp.Regexp
	allowedUsers []string
	defaultUser  string
	useSudo      bool
	forbidden    string
	envDeny      []string
	envAllow     []string // empty: any name envDeny does not refuse
	killGrace    time.Duration
	maxOutput    int64
	// cgroupParent is worker.cgroup resolved (executor.ResolveCgroupParent):
	// the cgroup orders get their own cgroup in, or "".
	cgroupParent string
	cgroupNote   string
	// scripts is what script orders may do (script.go).
	scripts scriptPolicy
	// actions are this worker's own actions (action.go); systemdRun runs
	// their native verbs (nil: over D-Bus).
	actions    *action.Set
	systemdRun SystemdRunner
	listUnits  UnitLister
	// euid and self are the worker's own identity. They are fields, not
	// calls, so that tests can play an unprivileged worker.
	euid int
	self *user.User
}

// Prepared is an order the host policy accepted, ready to run.
type Prepared struct {
	// Req is what the executor runs.
	Req executor.Request
	// ResolvedPath is the command as found in command_path: the canonical
	// command_path directory (symlinks resolved) joined with the entry's
	// name. Req.Path is the file it finally resolves to, which differs
	// when the entry is a symlink (/usr/sbin/shutdown → /usr/bin/systemctl).
	ResolvedPath string
	// User is the user the command runs as.
	User string
	// Cleanup, when set, must be called once the request has run (or will
	// not run): it removes what Prepare made for it, a script's run
	// directory.
	Cleanup func()
	// Native, when set, is run instead of Req: an action's systemd verb
	// over D-Bus, with no process (action.go).
	Native func(ctx context.Context, fence *systemd.Fence) executor.Result
}

// New compiles cfg into a Policy. It fails on a relative or empty
// command_path, a relative exec_root, a command_path directory outside
// exec_root, a regex that does not compile, a malformed env_deny entry or
// a default user the worker cannot become.
// An empty env_deny means config.DefaultEnvDeny: a worker never runs
// without one.
func New(cfg config.Worker) (*Policy, error) {
	p := &Policy{
		followLinks:  cfg.FollowLinks,
		allowedUsers: slices.Clone(cfg.AllowedUsers),
		defaultUser:  cfg.DefaultUser,
		useSudo:      cfg.UseSudo,
		forbidden:    cfg.ForbiddenChars,
		killGrace:    max(cfg.KillGrace, 0),
		maxOutput:    cfg.MaxOutputBytes,
		euid:         os.Geteuid(),
	}
	if p.maxOutput <= 0 {
		p.maxOutput = config.Default().Worker.MaxOutputBytes
	}
	var err error
	if p.execRoot, p.commandPath, err = commandPathOf(cfg); err != nil {
		return nil, err
	}
	p.pathVar = "PATH=" + strings.Join(p.commandPath, ":")
	if p.allow, err = compileAll("worker.allow", cfg.Allow); err != nil {
		return nil, err
	}
	if p.deny, err = compileAll("worker.deny", cfg.Deny); err != nil {
		return nil, err
	}
	p.envAllow = slices.Clone(cfg.EnvAllow)
	p.envDeny = slices.Clone(cfg.EnvDeny)
	if len(p.envDeny) == 0 {
		p.envDeny = config.DefaultEnvDeny()
	}
	for i, e := range p.envDeny {
		name := strings.TrimSuffix(e, "*")
		if name == "" || strings.Contains(name, "*") {
			return nil, fmt.Errorf("worker.env_deny[%d] %q: want a name or a prefix ending in *", i, e)
		}
	}
	for i, e := range p.envAllow {
		if !order.ValidEnvName(strings.TrimSuffix(e, "*")) {
			return nil, fmt.Errorf("worker.env_allow[%d] %q: want a name or a prefix ending in *", i, e)
		}
	}
	if p.cgroupParent, p.cgroupNote, err = executor.ResolveCgroupParent(cfg.Cgroup); err != nil {
		return nil, fmt.Errorf("worker.cgroup: %w", err)
	}
	p.self = selfUser(p.euid)
	if err := p.checkDefaultUser(); err != nil {
		return nil, err
	}
	return p, nil
}

// Cgroup says where orders get their own cgroup: the parent cgroup, or ""
// when they run in process groups only, and in note why (for the worker's
// start-up log: "auto" found no delegated cgroup, and what to do).
func (p *Policy) Cgroup() (parent, note string) {
	return p.cgroupParent, p.cgroupNote
}

// OrderCgroup is the path of the cgroup order id runs (or ran) in, or ""
// when orders run without one. A worker taking over a host can reap an
// order's cgroup by this path even when the order's process was never
// recorded (the previous worker died between the start and the record).
func (p *Policy) OrderCgroup(id uuid.UUID) string {
	if p.cgroupParent == "" {
		return ""
	}
	return filepath.Join(p.cgroupParent, orderCgroupName(id))
}

func orderCgroupName(id uuid.UUID) string { return "order-" + id.String() }

// request is the executor request every kind of order starts from: u's
// credential, this host's kill grace, the order's output handling, and
// the order's own cgroup when the worker has a parent for them.
func (p *Policy) request(o *order.Order, u runUser, path string, argv, env []string, dir string, timeout time.Duration, maxOutput int64) executor.Request {
	req := executor.Request{
		Path:          path,
		Argv:          argv,
		Env:           env,
		Dir:           dir,
		Timeout:       timeout,
		KillGrace:     p.killGrace,
		Credential:    u.credential,
		MaxOutput:     maxOutput,
		CaptureStdout: o.CaptureStdout,
		CaptureStderr: o.CaptureStderr,
	}
	if p.cgroupParent != "" {
		req.CgroupParent = p.cgroupParent
		req.CgroupName = orderCgroupName(o.ID)
	}
	return req
}

// maxOutputFor is this host's output cap, or the order's own when it asks
// for less.
func (p *Policy) maxOutputFor(o *order.Order) int64 {
	if o.MaxOutput > 0 {
		return min(o.MaxOutput, p.maxOutput)
	}
	return p.maxOutput
}

func compileAll(key string, patterns []string) ([]*regexp.Regexp, error) {
	res := make([]*regexp.Regexp, 0, len(patterns))
	for i, pat := range patterns {
		re, err := regexp.Compile(pat)
		if err != nil {
			return nil, fmt.Errorf("%s[%d] %q: %w", key, i, pat, err)
		}
		res = append(res, re)
	}
	return res, nil
}

// Prepare checks o against the host policy and builds the request to run.
// Checks run from the cheapest to the ones that touch the filesystem, and
// the first failure is returned: CodeInvalid for malformed input,
// CodeForbidden for what this host's policy refuses, CodeUnprocessable for
// what cannot be run here (unknown command or user).
func (p *Policy) Prepare(o *order.Order) (*Prepared, error) {
	if o.Kind == order.KindScript {
		return p.prepareScript(o)
	}
	if o.Kind == order.KindAction {
		return p.prepareAction(o)
	}
	if o.Kind != "" && o.Kind != order.KindExec {
		return nil, order.FieldError(order.CodeUnprocessable, "kind", "the worker's host policy only prepares exec orders, not %q", o.Kind)
	}
	if err := p.checkText(o); err != nil {
		return nil, err
	}
	cmd, err := p.resolve(o.Command)
	if err != nil {
		return nil, err
	}
	if err := p.checkRules(o.Command, cmd, o.Args); err != nil {
		return nil, err
	}
	u, err := p.runAs(o.RunAs)
	if err != nil {
		return nil, err
	}
	home := u.home()
	env, err := p.environment(o.Env, o.Kind, u.name, home)
	if err != nil {
		return nil, err
	}
	timeout := o.Timeout
	if timeout < 0 {
		return nil, order.FieldError(order.CodeInvalid, "timeout_seconds", "timeout_seconds must not be negative")
	}
	if timeout == 0 {
		timeout = order.DefaultLimits().DefaultTimeout
	}
	dir := home
	if p.execRoot != "" {
		dir = p.execRoot
	}

	req := p.request(o, u, cmd.realPath, append([]string{o.Command}, o.Args...), env, dir, timeout, p.maxOutputFor(o))
	req.Stdin = o.Stdin
	if u.sudo {
		if len(o.Env) > 0 {
			// sudo resets the environment (env_reset): the order's
			// variables would be dropped silently, as an action's would.
			return nil, order.FieldError(order.CodeUnprocessable, "run_as",
				"env reaches a command run as %s only from a worker running as root (sudo resets the environment)", u.name)
		}
		sudo, err := p.lookup("sudo")
		if err != nil {
			return nil, order.FieldError(order.CodeUnprocessable, "run_as",
				"running as %s needs sudo, which is not in this host's command_path", u.name)
		}
		// sudo gets the canonical command_path entry, not the file behind
		// it: sudo makes the path argv[0], and a multi-call binary acts on
		// that name. -n never prompts; -- ends sudo's options whatever the
		// arguments are.
		req.Path = sudo.realPath
		req.Argv = append([]string{"sudo", "-n", "-u", u.name, "--", cmd.resolvedPath}, o.Args...)
	}
	return &Prepared{Req: req, ResolvedPath: cmd.resolvedPath, User: u.name}, nil
}

// checkText re-checks what order.Validate checked at the API, plus this
// host's forbidden characters, before anything touches the filesystem.
func (p *Policy) checkText(o *order.Order) error {
	if o.Command == "" {
		return order.FieldError(order.CodeInvalid, "command", "command is required")
	}
	if order.HasControl(o.Command, false) {
		return order.FieldError(order.CodeInvalid, "command", "command contains NUL or control characters")
	}
	if r, ok := p.forbiddenRune(o.Command); ok {
		return order.FieldError(order.CodeForbidden, "command", "command contains the character %q, which this host forbids", r)
	}
	for i, a := range o.Args {
		if order.HasControl(a, true) {
			return order.FieldError(order.CodeInvalid, "args", "argument %d contains NUL or control characters", i+1)
		}
		if r, ok := p.forbiddenRune(a); ok {
			e := order.FieldError(order.CodeForbidden, "args", "argument %d contains the character %q, which this host forbids", i+1, r)
			e.Details["index"] = i
			return e
		}
	}
	return nil
}

// commandPathOf is cfg's exec_root and command_path, cleaned, or why they
// cannot be used: an empty or relative command_path, a relative exec_root,
// a command_path directory outside exec_root.
func commandPathOf(cfg config.Worker) (execRoot string, dirs []string, err error) {
	if len(cfg.CommandPath) == 0 {
		return "", nil, fmt.Errorf("worker.command_path is empty: no command could be resolved")
	}
	if cfg.ExecRoot != "" {
		if !filepath.IsAbs(cfg.ExecRoot) {
			return "", nil, fmt.Errorf("worker.exec_root %q is not an absolute path", cfg.ExecRoot)
		}
		execRoot = filepath.Clean(cfg.ExecRoot)
	}
	for i, dir := range cfg.CommandPath {
		if !filepath.IsAbs(dir) {
			return "", nil, fmt.Errorf("worker.command_path[%d] %q is not an absolute path", i, dir)
		}
		dir = filepath.Clean(dir)
		if execRoot != "" && !within(dir, execRoot) {
			return "", nil, fmt.Errorf("worker.command_path[%d] %q is outside worker.exec_root %q", i, dir, execRoot)
		}
		dirs = append(dirs, dir)
	}
	return execRoot, dirs, nil
}
