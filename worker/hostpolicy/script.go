package hostpolicy

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
)

// scriptName is the file the script is written to in its run directory.
const scriptName = ".orderly-script"

// runDirPrefix begins the name of a run directory in the temporary
// directory; the order's id follows it, then MkdirTemp's random part.
const runDirPrefix = "orderly-run-"

// runDirPattern is MkdirTemp's pattern for a run directory of order id.
func runDirPattern(id uuid.UUID) string { return runDirPrefix + id.String() + "-" }

// execDirVar names the run directory for the script (stage0's name).
const execDirVar = "RUNBOOK_EXEC_DIR_HOST"

// tokenVar is where the API puts the run's delegated token (orderly-rb-…,
// docs/runbooks.md), which the run's output must not show.
const tokenVar = "RUNBOOK_API_TOKEN"

// scriptPolicy is what a worker lets script orders (runbooks) do.
type scriptPolicy struct {
	interpreters []string // what a #! line may choose
	maxBytes     int64    // script and input files together
}

// NewWithRunbooks is New with the worker's runbook settings: the
// interpreters a script's #! line may choose and the cap on what a script
// order carries. A policy made by New alone uses config.DefaultRunbooks.
func NewWithRunbooks(cfg config.Worker, rb config.Runbooks) (*Policy, error) {
	p, err := New(cfg)
	if err != nil {
		return nil, err
	}
	p.scripts = scriptPolicy{interpreters: slices.Clone(rb.Interpreters), maxBytes: rb.MaxInputBytes}
	return p, nil
}

// prepareScript builds the run of a script order: a fresh private
// directory holding the input files and the script, the interpreter, and
// the same user, environment, timeout, output cap and process-group (or
// cgroup) containment as an exec order. Prepared.Cleanup removes the
// directory; the worker calls it once the run is over.
func (p *Policy) prepareScript(o *order.Order) (*Prepared, error) {
	s := o.Script
	if s == nil || len(s.Body) == 0 {
		return nil, order.FieldError(order.CodeUnprocessable, "kind", "a script order that carries no script cannot run")
	}
	sp := p.scripts
	if sp.maxBytes == 0 {
		sp = scriptPolicy{interpreters: config.DefaultRunbooks().Interpreters, maxBytes: config.DefaultRunbooks().MaxInputBytes}
	}
	if int64(s.Size()) > sp.maxBytes {
		return nil, order.FieldError(order.CodeTooLarge, "script",
			"the script and its input files are larger than this host's runbooks.max_input_bytes (%d bytes)", sp.maxBytes)
	}
	for _, f := range s.Files {
		if !safeRel(f.Path) {
			return nil, order.FieldError(order.CodeInvalid, "script", "input file path %q is not a plain relative path", order.Printable(f.Path))
		}
	}
	interp, err := sp.interpreter(s.Body)
	if err != nil {
		return nil, err
	}
	interpPath, err := p.trustedInterpreter(interp[0])
	if err != nil {
		return nil, err
	}
	u, err := p.runAs(o.RunAs)
	if err != nil {
		return nil, err
	}
	if u.sudo {
		// The run directory is private to the worker's user; only a root
		// worker can hand it to another user.
		return nil, order.FieldError(order.CodeUnprocessable, "run_as",
			"script orders run as another user only on a worker running as root")
	}
	for name := range o.Env {
		// zsh reads $ZDOTDIR/.zshenv before the script: an override of it
		// is code execution, like BASH_ENV.
		if strings.EqualFold(name, "ZDOTDIR") {
			return nil, order.FieldError(order.CodeForbidden, "env", "environment variable ZDOTDIR may not be set for a script")
		}
	}
	env, err := p.environment(o.Env, o.Kind, u.name, u.home())
	if err != nil {
		return nil, err
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = order.DefaultLimits().DefaultTimeout
	}

	dir, err := writeRunDir(s, u, o.ID)
	if err != nil {
		// The host's trouble (its disk full), not a refusal: unavailable,
		// which the worker records as a failed run, as a failed start.
		return nil, &order.Error{Code: order.CodeUnavailable, Message: "could not prepare the script's run directory on this host", Err: err}
	}
	// stage0's RUNBOOK_EXEC_DIR_HOST is the run directory as the host sees
	// it (for docker run -v): here the script runs on the host itself.
	env = slices.DeleteFunc(env, func(e string) bool { return strings.HasPrefix(e, execDirVar+"=") })
	env = append(env, execDirVar+"="+dir)
	argv := append(slices.Clone(interp), filepath.Join(dir, scriptName))
	req := p.request(o, u, interpPath, argv, env, dir, timeout, p.maxOutputFor(o))
	// The token is a credential of the run's principal until the run
	// ends: printed (set -x, env), it was anyone's who may read the
	// order's output, an auditor's or an admin's, live and kept.
	if tok := o.Env[tokenVar]; strings.HasPrefix(tok, "orderly-rb-") {
		req.Secrets = []string{tok}
	}
	return &Prepared{Req: req, ResolvedPath: interp[0], User: u.name,
		Cleanup: func() { _ = os.RemoveAll(dir) }}, nil
}

// trustedInterpreter checks the interpreter at path as resolution checks
// a command (entry): it lies outside command_path, so nothing else has,
// and a python3 in a directory a deploy user can write would run every
// script as whoever the script runs as. It returns the file itself, every
// symlink resolved, which the executor runs (argv[0] keeps the name), so
// that a link on the way cannot be swapped after the check.
func (p *Policy) trustedInterpreter(path string) (string, error) {
	realPath, why, err := p.untrustedInterpreter(path)
	if err != nil {
		return "", order.FieldError(order.CodeUnprocessable, "script", "the script's interpreter %s is unavailable", path)
	}
	if why != "" {
		return "", order.FieldError(order.CodeForbidden, "script",
			"the script's interpreter %s is not trusted on this host: %s", path, why)
	}
	return realPath, nil
}

// untrustedInterpreter resolves the interpreter at path and says why
// someone other than root and the worker's own user could change it, or "".
func (p *Policy) untrustedInterpreter(path string) (realPath, why string, err error) {
	realDir, err := filepath.EvalSymlinks(filepath.Dir(path))
	if err != nil {
		return "", "", err
	}
	if realPath, err = filepath.EvalSymlinks(path); err != nil {
		return "", "", err
	}
	fi, err := os.Stat(realPath)
	if err != nil {
		return "", "", err
	}
	return realPath, p.untrustedFile(realDir, realPath, fi), nil
}

// UntrustedInterpreters lists the interpreters scripts may run with (the
// #! line's choices and the defaults) that exist and that someone other
// than root and the worker's own user could change, each with why.
// Scripts that would run with one are refused; the worker says so at
// start-up.
func (p *Policy) UntrustedInterpreters() []string {
	listed := p.scripts.interpreters
	if p.scripts.maxBytes == 0 {
		listed = config.DefaultRunbooks().Interpreters
	}
	var out []string
	for _, path := range uniq(append([]string{"/bin/zsh", "/bin/sh"}, listed...)...) {
		if _, why, err := p.untrustedInterpreter(path); err == nil && why != "" {
			out = append(out, fmt.Sprintf("%s: %s", path, why)) // absent ones are refused as such
		}
	}
	return out
}

// interpreter returns the argv prefix that runs body: the #! line's
// interpreter (and its one argument, as the kernel passes it) when it is
// in the allow list, else the default, /bin/zsh when present (stage0 ran
// every script with zsh) or /bin/sh.
func (sp scriptPolicy) interpreter(body []byte) ([]string, error) {
	first, _, _ := strings.Cut(string(body), "\n")
	line, ok := strings.CutPrefix(strings.TrimRight(first, "\r"), "#!")
	if !ok {
		for _, def := range []string{"/bin/zsh", "/bin/sh"} {
			if st, err := os.Stat(def); err == nil && !st.IsDir() {
				return []string{def}, nil
			}
		}
		return nil, order.Errorf(order.CodeUnprocessable, "neither /bin/zsh nor /bin/sh exists on this host")
	}
	prog, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
	prog = strings.TrimSpace(prog)
	if !slices.Contains(sp.interpreters, prog) {
		return nil, order.FieldError(order.CodeForbidden, "script",
			"the script's #! interpreter %q is not in this host's runbooks.interpreters", order.Printable(prog))
	}
	if st, err := os.Stat(prog); err != nil || st.IsDir() {
		return nil, order.FieldError(order.CodeUnprocessable, "script", "the script's interpreter %s does not exist on this host", prog)
	}
	if arg = strings.TrimSpace(arg); arg != "" {
		return []string{prog, arg}, nil
	}
	return []string{prog}, nil
}

// writeRunDir creates the run's private directory with the input files
// and the script, owned by the user the script runs as once written. Its
// name holds the order's id, for RemoveRunDirs.
func writeRunDir(s *order.Script, u runUser, id uuid.UUID) (_ string, err error) {
	dir, err := os.MkdirTemp("", runDirPattern(id))
	if err != nil {
		return "", err
	}
	defer func() {
		// dir, not a named result: every failing return sets that to "".
		if err != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	chown := func(p string) error {
		if u.credential == nil {
			return nil
		}
		return os.Lchown(p, int(u.credential.Uid), int(u.credential.Gid))
	}
	files := append(slices.Clone(s.Files), order.File{Path: scriptName, Mode: 0o700, Data: s.Body})
	for _, f := range files {
		dst := filepath.Join(dir, filepath.FromSlash(f.Path))
		var missing []string
		for parent := filepath.Dir(dst); parent != dir; parent = filepath.Dir(parent) {
			if _, err := os.Lstat(parent); err == nil {
				break
			}
			missing = append(missing, parent)
		}
		for _, d := range slices.Backward(missing) {
			if err := os.Mkdir(d, 0o700); err != nil {
				return "", err
			}
			if err := chown(d); err != nil {
				return "", err
			}
		}
		mode := f.Mode.Perm() & 0o700
		if mode == 0 {
			mode = 0o600
		}
		fh, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode|0o600)
		if err != nil {
			return "", fmt.Errorf("write %s: %w", f.Path, err)
		}
		_, werr := fh.Write(f.Data)
		if cerr := fh.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return "", fmt.Errorf("write %s: %w", f.Path, werr)
		}
		if err := chown(dst); err != nil {
			return "", err
		}
	}
	// The directory is the user's only now: until then it is root's and
	// 0700, so no process of the user can plant a symlink where a file or
	// subdirectory is about to be written.
	if err := chown(dir); err != nil {
		return "", err
	}
	return dir, nil
}

// safeRel reports a relative path that stays inside its directory.
func safeRel(p string) bool {
	if p == "" || p == scriptName || strings.ContainsAny(p, "\\\x00") || path.IsAbs(p) {
		return false
	}
	c := path.Clean(p)
	return c == p && c != "." && c != ".." && !strings.HasPrefix(c, "../")
}

// RemoveRunDirs removes the run directories of order id that a worker
// left in the temporary directory because it stopped before the run's
// end (killed, frozen past its lease, its machine's power cut): they hold
// the script and its input files, which PostgreSQL erased when the order
// ended, and nothing else removes them. The host's next worker calls it
// once the order's processes are proven gone. It returns the directories
// it removed.
func (p *Policy) RemoveRunDirs(id uuid.UUID) ([]string, error) {
	dirs, err := filepath.Glob(filepath.Join(os.TempDir(), runDirPattern(id)+"*"))
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			return removed, err
		}
		removed = append(removed, d)
	}
	return removed, nil
}
