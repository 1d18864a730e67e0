package hostpolicy

import (
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
)

// fixture is a small filesystem laid out like a merged-/usr host:
//
//	usr/bin/{ls,shutdown-free tools,systemctl,notexec,dup,subdir/tool}
//	usr/bin/escape -> ../../outside/evil   (a link out of command_path)
//	usr/sbin/{shutdown,halt} -> ../../bin/systemctl
//	usr/sbin/dup
//	bin -> usr/bin, sbin -> usr/sbin
//	outside/evil
//	exec/bin/{tool, link-in -> tool, link-out -> ../../outside/evil}
//	exec/linkdir -> bin
type fixture struct {
	root string // symlinks resolved, so expected paths compare equal
}

func newFixture(t testing.TB) fixture {
	t.Helper()
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := fixture{root: root}
	for _, p := range []string{
		"usr/bin/ls", "usr/bin/systemctl", "usr/bin/dup", "usr/bin/subdir/tool", "usr/bin/id",
		"usr/sbin/dup", "outside/evil", "exec/bin/tool",
	} {
		f.file(t, p, 0o755)
	}
	f.file(t, "usr/bin/notexec", 0o644)
	f.link(t, "../../outside/evil", "usr/bin/escape")
	f.link(t, "../../bin/systemctl", "usr/sbin/shutdown")
	f.link(t, "../../bin/systemctl", "usr/sbin/halt")
	f.link(t, "usr/bin", "bin")
	f.link(t, "usr/sbin", "sbin")
	f.link(t, "tool", "exec/bin/link-in")
	f.link(t, "../../outside/evil", "exec/bin/link-out")
	f.link(t, "bin", "exec/linkdir")
	return f
}

func (f fixture) path(rel string) string { return filepath.Join(f.root, rel) }

func (f fixture) file(t testing.TB, rel string, mode os.FileMode) {
	t.Helper()
	p := f.path(rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 0\n"), mode); err != nil {
		t.Fatal(err)
	}
}

func (f fixture) link(t testing.TB, target, rel string) {
	t.Helper()
	p := f.path(rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

// cfg is a worker config over the fixture: command_path usr/bin, bin,
// usr/sbin, sbin, in that order.
func (f fixture) cfg() config.Worker {
	w := config.Default().Worker
	w.CommandPath = []string{f.path("usr/bin"), f.path("bin"), f.path("usr/sbin"), f.path("sbin")}
	return w
}

func newPolicy(t *testing.T, cfg config.Worker) *Policy {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

// assertCode checks err is an *order.Error with code want ("" = no error)
// and, when given, that its message contains each of contains.
func assertCode(t *testing.T, err error, want order.Code, contains ...string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("err = %v, want none", err)
		}
		return
	}
	var oe *order.Error
	if !errors.As(err, &oe) {
		t.Fatalf("err = %v (%T), want an *order.Error with code %s", err, err, want)
	}
	if oe.Code != want {
		t.Fatalf("code = %s (%s), want %s", oe.Code, oe.Message, want)
	}
	for _, c := range contains {
		if !strings.Contains(oe.Message, c) {
			t.Errorf("message %q does not mention %q", oe.Message, c)
		}
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	good := config.Default().Worker
	tests := []struct {
		name   string
		mutate func(*config.Worker)
		ok     bool
	}{
		{"defaults", func(*config.Worker) {}, true},
		{"relative command_path", func(w *config.Worker) { w.CommandPath = []string{"/usr/bin", "bin"} }, false},
		{"dot command_path", func(w *config.Worker) { w.CommandPath = []string{"."} }, false},
		{"empty command_path", func(w *config.Worker) { w.CommandPath = nil }, false},
		{"bad allow regex", func(w *config.Worker) { w.Allow = []string{"^ls(", "x"} }, false},
		{"bad deny regex", func(w *config.Worker) { w.Deny = []string{"[z-a]"} }, false},
		{"relative exec_root", func(w *config.Worker) { w.ExecRoot = "srv" }, false},
		{"command_path outside exec_root", func(w *config.Worker) { w.ExecRoot = "/srv/exec" }, false},
		{"command_path inside exec_root", func(w *config.Worker) {
			w.ExecRoot, w.CommandPath = "/srv/exec", []string{"/srv/exec/bin"}
		}, true},
		{"exec_root sibling prefix is not inside", func(w *config.Worker) {
			w.ExecRoot, w.CommandPath = "/srv/exec", []string{"/srv/exec2/bin"}
		}, false},
		{"env_deny star inside", func(w *config.Worker) { w.EnvDeny = []string{"A*B"} }, false},
		{"env_deny lone star", func(w *config.Worker) { w.EnvDeny = []string{"*"} }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := good
			w.CommandPath = slices.Clone(good.CommandPath)
			tt.mutate(&w)
			_, err := New(w)
			if (err == nil) != tt.ok {
				t.Fatalf("New: err = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := newPolicy(t, f.cfg())
	ok := order.Code("")
	tests := []struct {
		name     string
		command  string
		code     order.Code
		resolved string // ResolvedPath
		real     string // Req.Path
	}{
		{"bare name", "ls", ok, "usr/bin/ls", "usr/bin/ls"},
		{"absolute", f.path("usr/bin/ls"), ok, "usr/bin/ls", "usr/bin/ls"},
		{"absolute through a linked dir", f.path("bin/ls"), ok, "usr/bin/ls", "usr/bin/ls"},
		{"absolute with double slash is cleaned", f.root + "/usr/bin//ls", ok, "usr/bin/ls", "usr/bin/ls"},
		{"first command_path dir wins", "dup", ok, "usr/bin/dup", "usr/bin/dup"},
		{"later dir", f.path("usr/sbin/dup"), ok, "usr/sbin/dup", "usr/sbin/dup"},
		{"symlinked entry runs its target", "halt", ok, "usr/sbin/halt", "usr/bin/systemctl"},
		{"symlinked entry by linked dir", f.path("sbin/shutdown"), ok, "usr/sbin/shutdown", "usr/bin/systemctl"},
		// An administrator's link in a command_path dir is trusted like a
		// PATH lookup would; exec_root is the containment for links.
		{"link out of command_path, bare", "escape", ok, "usr/bin/escape", "outside/evil"},
		{"link out of command_path, absolute", f.path("usr/bin/escape"), ok, "usr/bin/escape", "outside/evil"},

		{"empty", "", order.CodeInvalid, "", ""},
		{"NUL", "ls\x00", order.CodeInvalid, "", ""},
		{"newline", "l\ns", order.CodeInvalid, "", ""},
		{"escape byte", "\x1b[31mls", order.CodeInvalid, "", ""},
		{"DEL", "ls\x7f", order.CodeInvalid, "", ""},
		{"invalid UTF-8", "l\xffs", order.CodeInvalid, "", ""},
		{"dot", ".", order.CodeForbidden, "", ""},
		{"dotdot", "..", order.CodeForbidden, "", ""},
		{"dotdot slash", "../outside/evil", order.CodeForbidden, "", ""},
		{"dot slash", "./ls", order.CodeForbidden, "", ""},
		{"relative with slash", "usr/bin/ls", order.CodeForbidden, "", ""},
		{"percent dotdot", "%2e%2e", order.CodeForbidden, "", ""},
		{"percent upper", "%2E%2E", order.CodeForbidden, "", ""},
		{"percent traversal", "%2e%2e%2f%2e%2e%2fbin%2fsh", order.CodeForbidden, "", ""},
		{"percent slash in name", "ls%2f", order.CodeForbidden, "", ""},
		{"absolute dotdot escape", f.path("usr/bin") + "/../../outside/evil", order.CodeForbidden, "", ""},
		{"absolute dotdot back inside", f.path("usr/bin") + "/../bin/ls", order.CodeForbidden, "", ""},
		{"absolute dot element", f.path("usr/bin") + "/./ls", order.CodeForbidden, "", ""},
		{"absolute outside", f.path("outside/evil"), order.CodeForbidden, "", ""},
		{"absolute subdirectory", f.path("usr/bin/subdir/tool"), order.CodeForbidden, "", ""},
		{"absolute system binary", "/bin/sh", order.CodeForbidden, "", ""},
		{"not found", "nosuch", order.CodeUnprocessable, "", ""},
		{"not executable", "notexec", order.CodeUnprocessable, "", ""},
		{"absolute not executable", f.path("usr/bin/notexec"), order.CodeUnprocessable, "", ""},
		{"directory", "subdir", order.CodeUnprocessable, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			prep, err := p.Prepare(&order.Order{Command: tt.command, Args: []string{"-x"}})
			assertCode(t, err, tt.code)
			if err != nil {
				return
			}
			if want := f.path(tt.resolved); prep.ResolvedPath != want {
				t.Errorf("ResolvedPath = %s, want %s", prep.ResolvedPath, want)
			}
			if want := f.path(tt.real); prep.Req.Path != want {
				t.Errorf("Req.Path = %s, want %s", prep.Req.Path, want)
			}
			if want := []string{tt.command, "-x"}; !slices.Equal(prep.Req.Argv, want) {
				t.Errorf("Argv = %q, want %q (argv[0] as requested)", prep.Req.Argv, want)
			}
		})
	}
}

// TestResolveCommandLineSaysNoShell: a command written as a shell
// command line ("ls -l", an absolute path with its options) is looked
// up whole and found nowhere; the refusal says to send the program alone
// and its arguments in args. It said only that no such file exists.
func TestResolveCommandLineSaysNoShell(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := newPolicy(t, f.cfg())
	for _, c := range []struct{ command, program string }{
		{"ls -l", "ls"},
		{"ls | wc -l", "ls"},
		{f.path("usr/bin/ls") + " -l", f.path("usr/bin/ls")},
	} {
		_, err := p.Prepare(&order.Order{Command: c.command})
		assertCode(t, err, order.CodeUnprocessable, "run without a shell", `send "`+c.program+`" as the command`, "args")
	}
	// A name without a space is not told about shells.
	_, err := p.Prepare(&order.Order{Command: "nosuch"})
	var oe *order.Error
	if !errors.As(err, &oe) || strings.Contains(oe.Message, "shell") {
		t.Errorf("nosuch: %v, want a refusal that does not mention a shell", err)
	}
}

func TestExecRoot(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ok := order.Code("")
	tests := []struct {
		name    string
		follow  bool
		command string
		code    order.Code
		real    string
	}{
		{"plain file", false, "tool", ok, "exec/bin/tool"},
		{"plain file, follow", true, "tool", ok, "exec/bin/tool"},
		{"link inside, no follow", false, "link-in", order.CodeForbidden, ""},
		{"link inside, follow", true, "link-in", ok, "exec/bin/tool"},
		{"link out, no follow", false, "link-out", order.CodeForbidden, ""},
		{"link out, follow", true, "link-out", order.CodeForbidden, ""},
		{"linked dir, no follow", false, f.path("exec/linkdir/tool"), order.CodeForbidden, ""},
		{"linked dir, follow", true, f.path("exec/linkdir/tool"), ok, "exec/bin/tool"},
		{"dotdot out, no follow", false, f.path("exec/bin") + "/../../outside/evil", order.CodeForbidden, ""},
		{"dotdot out, follow", true, f.path("exec/bin") + "/../../outside/evil", order.CodeForbidden, ""},
		{"absolute outside", true, f.path("outside/evil"), order.CodeForbidden, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := f.cfg()
			cfg.ExecRoot = f.path("exec")
			cfg.CommandPath = []string{f.path("exec/bin")}
			cfg.FollowLinks = tt.follow
			prep, err := newPolicy(t, cfg).Prepare(&order.Order{Command: tt.command})
			assertCode(t, err, tt.code)
			if err != nil {
				return
			}
			if want := f.path(tt.real); prep.Req.Path != want {
				t.Errorf("Req.Path = %s, want %s", prep.Req.Path, want)
			}
			if prep.Req.Dir != f.path("exec") {
				t.Errorf("Dir = %s, want exec_root", prep.Req.Dir)
			}
		})
	}

	t.Run("symlinked command_path dir, no follow", func(t *testing.T) {
		t.Parallel()
		cfg := f.cfg()
		cfg.ExecRoot = f.path("exec")
		cfg.CommandPath = []string{f.path("exec/linkdir")}
		_, err := newPolicy(t, cfg).Prepare(&order.Order{Command: "tool"})
		assertCode(t, err, order.CodeForbidden, "symlink")
	})
}

func TestRules(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	q := regexp.QuoteMeta
	ok := order.Code("")
	tests := []struct {
		name    string
		allow   []string
		deny    []string
		command string
		args    []string
		code    order.Code
	}{
		{"no rules", nil, nil, "ls", nil, ok},
		{"deny by name", nil, []string{`^shutdown`}, "shutdown", nil, order.CodeForbidden},
		// The reason deny also sees the base name: an absolute path must
		// not dodge a rule written against the name.
		{"deny by name, absolute dodge", nil, []string{`^shutdown`}, f.path("sbin/shutdown"), nil, order.CodeForbidden},
		{"deny by name, canonical dodge", nil, []string{`^shutdown`}, f.path("usr/sbin/shutdown"), []string{"-h", "now"}, order.CodeForbidden},
		{"deny by resolved path, bare name", nil, []string{`^` + q(f.path("usr/bin/ls")) + `( |$)`}, "ls", nil, order.CodeForbidden},
		{"deny by resolved path, linked dir", nil, []string{`^` + q(f.path("usr/bin/ls"))}, f.path("bin/ls"), nil, order.CodeForbidden},
		{"deny by real file catches its links", nil, []string{`^` + q(f.path("usr/bin/systemctl"))}, "shutdown", nil, order.CodeForbidden},
		{"deny by real file's name catches its links", nil, []string{`^systemctl( |$)`}, "halt", nil, order.CodeForbidden},
		{"deny by args", nil, []string{`^ls -l /root$`}, "ls", []string{"-l", "/root"}, order.CodeForbidden},
		{"deny by args, other args", nil, []string{`^ls -l /root$`}, "ls", []string{"-l", "/tmp"}, ok},
		{"deny does not match others", nil, []string{`^shutdown`}, "ls", nil, ok},
		{"allow by name", []string{`^ls( |$)`}, nil, "ls", []string{"-la"}, ok},
		{"allow by resolved path", []string{`^` + q(f.path("usr/bin/ls")) + `( |$)`}, nil, "ls", nil, ok},
		{"allow by resolved path, linked dir", []string{`^` + q(f.path("usr/bin/ls")) + `( |$)`}, nil, f.path("bin/ls"), nil, ok},
		{"not allowed", []string{`^ls( |$)`}, nil, "shutdown", nil, order.CodeForbidden},
		{"allow is not widened to the base name", []string{`^ls( |$)`}, nil, f.path("usr/bin/ls"), nil, order.CodeForbidden},
		{"allow is not widened to a link's target", []string{`^systemctl status$`}, nil, "halt", []string{"status"}, order.CodeForbidden},
		{"allow target itself", []string{`^systemctl status$`}, nil, "systemctl", []string{"status"}, ok},
		{"deny wins over allow", []string{`^ls`}, []string{`-R`}, "ls", []string{"-R", "/"}, order.CodeForbidden},
		{"allow with args", []string{`^ls -la$`}, nil, "ls", []string{"-la"}, ok},
		{"allow with args, other args", []string{`^ls -la$`}, nil, "ls", []string{"-la", "/etc"}, order.CodeForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := f.cfg()
			cfg.Allow, cfg.Deny = tt.allow, tt.deny
			_, err := newPolicy(t, cfg).Prepare(&order.Order{Command: tt.command, Args: tt.args})
			assertCode(t, err, tt.code)
		})
	}
}

// TestRulesSystemShutdown is the real host's /sbin/shutdown, where it exists.
func TestRulesSystemShutdown(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/sbin/shutdown"); err != nil {
		t.Skip("no /sbin/shutdown on this host; TestRules covers the same layout")
	}
	cfg := config.Default().Worker
	cfg.Deny = []string{`^shutdown`}
	p := newPolicy(t, cfg)
	for _, cmd := range []string{"shutdown", "/sbin/shutdown", "/usr/sbin/shutdown"} {
		_, err := p.Prepare(&order.Order{Command: cmd, Args: []string{"-h", "now"}})
		assertCode(t, err, order.CodeForbidden, "^shutdown")
	}
}

func TestForbiddenChars(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cfg := f.cfg()
	// Vigrid's set, 12 characters: " ' ; \ | & ( ) { } $ `
	vigrid := "\"';\\|&(){}$`"
	if n := len([]rune(vigrid)); n != 12 {
		t.Fatalf("the set has %d characters, want 12", n)
	}
	cfg.ForbiddenChars = vigrid + "é"
	p := newPolicy(t, cfg)
	for _, c := range vigrid + "é" {
		t.Run("arg "+string(c), func(t *testing.T) {
			_, err := p.Prepare(&order.Order{Command: "ls", Args: []string{"fine", "a" + string(c) + "b"}})
			assertCode(t, err, order.CodeForbidden, "argument 2", string(c))
		})
		t.Run("command "+string(c), func(t *testing.T) {
			_, err := p.Prepare(&order.Order{Command: "l" + string(c) + "s"})
			assertCode(t, err, order.CodeForbidden, "command")
		})
	}
	for _, arg := range []string{"a-b", "a b", "/tmp/x.txt", "ü", "#", "*", "~"} {
		t.Run("allowed "+arg, func(t *testing.T) {
			_, err := p.Prepare(&order.Order{Command: "ls", Args: []string{arg}})
			assertCode(t, err, "")
		})
	}
	t.Run("message names the character", func(t *testing.T) {
		_, err := p.Prepare(&order.Order{Command: "ls", Args: []string{"x;y"}})
		assertCode(t, err, order.CodeForbidden, `';'`)
	})
	t.Run("args with control bytes", func(t *testing.T) {
		_, err := p.Prepare(&order.Order{Command: "ls", Args: []string{"a\x00b"}})
		assertCode(t, err, order.CodeInvalid)
	})
	t.Run("none configured", func(t *testing.T) {
		_, err := newPolicy(t, f.cfg()).Prepare(&order.Order{Command: "ls", Args: []string{";$(reboot)"}})
		assertCode(t, err, "")
	})
}

func TestEnvRules(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := newPolicy(t, f.cfg())
	type tc struct {
		name string
		code order.Code
	}
	var tests []tc
	// Every entry of the default deny list, as spelled, lower-cased and
	// mixed-cased; prefixes with a suffix appended.
	for _, rule := range config.DefaultEnvDeny() {
		name := rule
		if prefix, ok := strings.CutSuffix(rule, "*"); ok {
			name = prefix + "X"
		}
		tests = append(tests,
			tc{name, order.CodeForbidden},
			tc{strings.ToLower(name), order.CodeForbidden},
			tc{strings.ToUpper(name[:1]) + strings.ToLower(name[1:]), order.CodeForbidden},
		)
	}
	tests = append(tests,
		tc{"LD_PRELOAD", order.CodeForbidden},
		tc{"ld_preload", order.CodeForbidden},
		tc{"LD_LIBRARY_PATH", order.CodeForbidden},
		tc{"BASH_FUNC_x", order.CodeForbidden},
		tc{"BASH_FUNC_x%%", order.CodeInvalid},
		tc{"BASH_FUNC_echo()", order.CodeInvalid},
		tc{"1ABC", order.CodeInvalid},
		tc{"A-B", order.CodeInvalid},
		tc{"A B", order.CodeInvalid},
		tc{"A=B", order.CodeInvalid},
		tc{"", order.CodeInvalid},
		tc{"É", order.CodeInvalid},
		tc{"FOO", ""},
		tc{"_private", ""},
		tc{"LANG", ""},
		tc{"PATHX", ""}, // PATH is exact, not a prefix
		tc{"OLDLD_PRELOAD", ""},
	)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := p.Prepare(&order.Order{Command: "ls", Env: map[string]string{tt.name: "v"}})
			assertCode(t, err, tt.code)
		})
	}
	t.Run("value with NUL", func(t *testing.T) {
		_, err := p.Prepare(&order.Order{Command: "ls", Env: map[string]string{"FOO": "a\x00b"}})
		assertCode(t, err, order.CodeInvalid, "FOO")
	})
	t.Run("custom deny list replaces the default", func(t *testing.T) {
		cfg := f.cfg()
		cfg.EnvDeny = []string{"SECRET_*", "TOKEN"}
		p := newPolicy(t, cfg)
		for name, code := range map[string]order.Code{
			"SECRET_KEY": order.CodeForbidden, "secret_key": order.CodeForbidden, "TOKEN": order.CodeForbidden,
			"TOKENS": "", "GIT_DIR": "",
		} {
			_, err := p.Prepare(&order.Order{Command: "ls", Env: map[string]string{name: "v"}})
			assertCode(t, err, code)
		}
	})
	t.Run("allow list", func(t *testing.T) {
		// Only what env_allow names, and still nothing env_deny refuses:
		// hooks nobody listed (LESSOPEN was one) cannot be set at all.
		cfg := f.cfg()
		cfg.EnvAllow = []string{"GREETING", "APP_*", "PATH"}
		p := newPolicy(t, cfg)
		for name, code := range map[string]order.Code{
			"GREETING": "", "APP_MODE": "", "greeting": order.CodeForbidden, "GREETINGS": order.CodeForbidden,
			"SOME_HOOK": order.CodeForbidden, "PATH": order.CodeForbidden,
		} {
			_, err := p.Prepare(&order.Order{Command: "ls", Env: map[string]string{name: "v"}})
			assertCode(t, err, code)
		}
	})
}

// TestEnvHooksOfCommonTools: variables through which a command line
// that a policy rule allows runs another command, with no file needed,
// are refused by default. Each was tried for real (tenth probing round):
// TAR_OPTIONS="--checkpoint=1 --checkpoint-action=exec=id" makes an
// allowed "tar -cf /backup/x.tar /srv" run id, ZIPOPT="-T -TT id" does it
// for zip, MAKEFLAGS or GNUMAKEFLAGS="--eval=$(shell id)" for make;
// RSYNC_RSH and RSYNC_CONNECT_PROG name the program rsync runs as its
// transport, SYSTEMD_EDITOR the editor of "systemctl edit", MANOPT the
// options (a pager: -P) of man, WGETRC a wgetrc whose use_askpass wget
// runs.
func TestEnvHooksOfCommonTools(t *testing.T) {
	t.Parallel()
	p := newPolicy(t, newFixture(t).cfg())
	for _, name := range []string{"TAR_OPTIONS", "ZIPOPT", "MAKEFLAGS", "GNUMAKEFLAGS", "RSYNC_RSH",
		"RSYNC_CONNECT_PROG", "SYSTEMD_EDITOR", "MANOPT", "WGETRC", "tar_options"} {
		_, err := p.Prepare(&order.Order{Command: "ls", Env: map[string]string{name: "--checkpoint-action=exec=id"}})
		assertCode(t, err, order.CodeForbidden, name)
	}
}

func TestEnvironment(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := newPolicy(t, f.cfg())
	prep, err := p.Prepare(&order.Order{Command: "ls", Env: map[string]string{"A1": "2", "A": "1", "LANG": "de_DE.UTF-8"}})
	assertCode(t, err, "")
	self, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	home := self.HomeDir
	if fi, err := os.Stat(home); err != nil || !fi.IsDir() {
		home = "/"
	}
	want := []string{
		"A=1", "A1=2", // sorted by name, not by "NAME=value"
		"HOME=" + home,
		"LANG=de_DE.UTF-8",
		"LOGNAME=" + self.Username,
		"PATH=" + strings.Join(f.cfg().CommandPath, ":"),
		"USER=" + self.Username,
	}
	if !slices.Equal(prep.Req.Env, want) {
		t.Errorf("Env =\n%q\nwant\n%q", prep.Req.Env, want)
	}
	if prep.Req.Dir != home {
		t.Errorf("Dir = %q, want the user's home %q", prep.Req.Dir, home)
	}

	prep, err = p.Prepare(&order.Order{Command: "ls"})
	assertCode(t, err, "")
	if !slices.Contains(prep.Req.Env, "LANG=C.UTF-8") {
		t.Errorf("Env %q lacks the default LANG", prep.Req.Env)
	}
}

func TestLimitsAndPassThrough(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cfg := f.cfg()
	cfg.MaxOutputBytes = 1000
	cfg.KillGrace = 3 * time.Second
	p := newPolicy(t, cfg)
	for _, tt := range []struct {
		orderMax, want int64
	}{{0, 1000}, {500, 500}, {5000, 1000}} {
		prep, err := p.Prepare(&order.Order{Command: "ls", MaxOutput: tt.orderMax})
		assertCode(t, err, "")
		if prep.Req.MaxOutput != tt.want {
			t.Errorf("order max_output %d: MaxOutput = %d, want %d", tt.orderMax, prep.Req.MaxOutput, tt.want)
		}
	}
	cfg.MaxOutputBytes = 0
	prep, err := newPolicy(t, cfg).Prepare(&order.Order{Command: "ls"})
	assertCode(t, err, "")
	if want := config.Default().Worker.MaxOutputBytes; prep.Req.MaxOutput != want {
		t.Errorf("unset max_output_bytes: MaxOutput = %d, want the default %d", prep.Req.MaxOutput, want)
	}

	stdin := []byte("in\x00put")
	prep, err = p.Prepare(&order.Order{Command: "ls", Timeout: 7 * time.Second, Stdin: stdin, CaptureStdout: true})
	assertCode(t, err, "")
	r := prep.Req
	if r.Timeout != 7*time.Second || r.KillGrace != 3*time.Second || string(r.Stdin) != string(stdin) ||
		!r.CaptureStdout || r.CaptureStderr || r.Credential != nil {
		t.Errorf("request %+v", r)
	}
	prep, err = p.Prepare(&order.Order{Command: "ls"})
	assertCode(t, err, "")
	if prep.Req.Timeout != order.DefaultLimits().DefaultTimeout {
		t.Errorf("Timeout = %v, want the default", prep.Req.Timeout)
	}
	_, err = p.Prepare(&order.Order{Command: "ls", Timeout: -time.Second})
	assertCode(t, err, order.CodeInvalid)
	_, err = p.Prepare(&order.Order{Command: "ls", Kind: order.KindScript})
	assertCode(t, err, order.CodeUnprocessable)
}
