package hostpolicy

import (
	"os"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
)

// TestUntrustedCommandPath: a command that someone other than root and the
// worker's user could have planted or changed is refused, and a bare name
// planted in an earlier directory does not fall through to the trusted
// copy further down the path.
func TestUntrustedCommandPath(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	// opt/open: a drop directory anyone may write, first on the path.
	f.file(t, "opt/open/dup", 0o755)
	f.file(t, "opt/open/planted", 0o755)
	chmod(t, f.path("opt/open"), 0o777)
	// opt/theirs: another user's directory.
	f.file(t, "opt/theirs/theirs", 0o755)
	if err := os.Chown(f.path("opt/theirs"), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	// A file anyone may rewrite, in a trusted directory.
	f.file(t, "usr/bin/rewritable", 0o755)
	chmod(t, f.path("usr/bin/rewritable"), 0o757)
	// A trusted directory's entry linking into an open directory.
	f.file(t, "tmpopen/real", 0o755)
	chmod(t, f.path("tmpopen"), 0o777)
	f.link(t, "../../tmpopen/real", "usr/bin/viaopen")
	// A trusted directory below a sticky open one, as under /tmp.
	f.file(t, "sticky/bin/fine", 0o755)
	chmod(t, f.path("sticky"), 0o777|os.ModeSticky)

	cfg := f.cfg()
	cfg.CommandPath = append([]string{f.path("opt/open"), f.path("opt/theirs"), f.path("sticky/bin")}, cfg.CommandPath...)
	p := newPolicy(t, cfg)
	for _, tt := range []struct {
		command string
		code    order.Code
		why     string
	}{
		{"planted", order.CodeForbidden, "writable by its group or by others"},
		{"dup", order.CodeForbidden, "opt/open"}, // not usr/bin/dup
		{f.path("opt/open/planted"), order.CodeForbidden, "mode 0777"},
		{"theirs", order.CodeForbidden, "owned by uid 65534"},
		{"rewritable", order.CodeForbidden, "rewritable is writable"},
		{"viaopen", order.CodeForbidden, "tmpopen is writable"},
		{"fine", "", ""},
		{"ls", "", ""},
	} {
		_, err := p.Prepare(&order.Order{Command: tt.command})
		if tt.code == "" {
			assertCode(t, err, "")
			continue
		}
		assertCode(t, err, tt.code, "not trusted on this host", tt.why)
	}

	got := strings.Join(p.UntrustedDirs(), "\n")
	for _, want := range []string{"opt/open is writable", "opt/theirs is owned by uid 65534"} {
		if !strings.Contains(got, want) {
			t.Errorf("UntrustedDirs() = %q, want a line with %q", got, want)
		}
	}
	if strings.Contains(got, "sticky") || strings.Contains(got, "usr/bin") {
		t.Errorf("UntrustedDirs() = %q lists a trusted directory", got)
	}

	// An open parent that is not sticky lets anyone rename the directory
	// away and put another in its place.
	chmod(t, f.path("sticky"), 0o777)
	if got := strings.Join(p.UntrustedDirs(), "\n"); !strings.Contains(got, "sticky is writable") {
		t.Errorf("UntrustedDirs() = %q, want the open, not sticky parent of sticky/bin", got)
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// TestUntrustedAncestors: each order checks every directory above the
// file it runs and above the command_path directory it was found in, not
// only the two themselves. Where one of them is writable by others and
// not sticky, anyone can rename the directory below it away and put
// their own in its place between the check and the exec: the entry
// /usr/bin/srvtool -> /srv/tools/bin/tool with /srv/tools open runs
// whatever someone moved to /srv/tools/bin.
func TestUntrustedAncestors(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	// An entry of a trusted directory links into a tree with an open,
	// not sticky directory two levels above the file.
	f.file(t, "srv/tools/bin/tool", 0o755)
	chmod(t, f.path("srv/tools"), 0o777)
	f.link(t, "../../srv/tools/bin/tool", "usr/bin/srvtool")
	// The same below a sticky open directory, as under /tmp: fine.
	f.file(t, "shared/tools/bin/tool", 0o755)
	chmod(t, f.path("shared"), 0o777|os.ModeSticky)
	f.link(t, "../../shared/tools/bin/tool", "usr/bin/sharedtool")
	// A command_path directory whose parent is open and not sticky.
	f.file(t, "open/bin/opentool", 0o755)
	chmod(t, f.path("open"), 0o777)
	// A file whose own directory is an ancestor of the command_path
	// directory it is an entry of: checked as the file's directory, with
	// no sticky allowance.
	f.file(t, "stickyfile/tool", 0o755)
	f.link(t, "../tool", "stickyfile/bin/up")
	chmod(t, f.path("stickyfile"), 0o777|os.ModeSticky)

	cfg := f.cfg()
	cfg.CommandPath = append(cfg.CommandPath, f.path("open/bin"), f.path("stickyfile/bin"))
	p := newPolicy(t, cfg)
	for _, tt := range []struct {
		command string
		code    order.Code
		why     string
	}{
		{"srvtool", order.CodeForbidden, "srv/tools is writable"},
		{f.path("usr/bin/srvtool"), order.CodeForbidden, "srv/tools is writable"},
		{"sharedtool", "", ""},
		{"opentool", order.CodeForbidden, "open is writable"},
		{"up", order.CodeForbidden, "stickyfile is writable"},
		{"ls", "", ""},
	} {
		_, err := p.Prepare(&order.Order{Command: tt.command})
		if tt.code == "" {
			assertCode(t, err, "")
			continue
		}
		assertCode(t, err, tt.code, "not trusted on this host", tt.why)
	}
}

// BenchmarkResolveTrust is the cost of resolving an exec order's command,
// trust checks included: a bare name in the host's own /usr/bin, and an
// entry of a deep temporary tree that links into another.
func BenchmarkResolveTrust(b *testing.B) {
	f := newFixture(b)
	f.file(b, "srv/tools/bin/tool", 0o755)
	f.link(b, "../../srv/tools/bin/tool", "usr/bin/srvtool")
	for _, bb := range []struct {
		name, command string
		path          []string
	}{
		{"usr-bin", "true", []string{"/usr/bin"}},
		{"deep-link", "srvtool", []string{f.path("usr/bin")}},
	} {
		b.Run(bb.name, func(b *testing.B) {
			cfg := f.cfg()
			cfg.CommandPath = bb.path
			p, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := p.resolve(bb.command); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestUntrustedInterpreter: a script's interpreter lies outside
// command_path, and was run wherever runbooks.interpreters named it: one
// in a directory others can write (a virtualenv a deploy user owns), or
// below one, is refused as a command there would be; a trusted one runs
// as the file itself, its argv[0] the name the #! line gave.
func TestUntrustedInterpreter(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.file(t, "venv/bin/python3", 0o755)
	chmod(t, f.path("venv/bin"), 0o777)
	f.file(t, "srv/py/bin/python3", 0o755)
	chmod(t, f.path("srv/py"), 0o777)
	f.file(t, "opt/py/bin/python3", 0o755)
	f.link(t, "python3", "opt/py/bin/py")
	rb := config.DefaultRunbooks()
	rb.Interpreters = []string{f.path("venv/bin/python3"), f.path("srv/py/bin/python3"), f.path("opt/py/bin/py")}
	p, err := NewWithRunbooks(f.cfg(), rb)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		interp string
		why    string
	}{
		{f.path("venv/bin/python3"), "venv/bin is writable"},
		{f.path("srv/py/bin/python3"), "srv/py is writable"},
	} {
		_, err := p.Prepare(scriptOrder("#!" + tt.interp + "\nprint(1)\n"))
		assertCode(t, err, order.CodeForbidden, "interpreter", "not trusted on this host", tt.why)
	}
	got := strings.Join(p.UntrustedInterpreters(), "\n")
	if !strings.Contains(got, "venv/bin is writable") || !strings.Contains(got, "srv/py is writable") || strings.Contains(got, "opt/py") {
		t.Errorf("UntrustedInterpreters() = %q, want the venv's and srv's python3 only", got)
	}
	prep, err := p.Prepare(scriptOrder("#!" + f.path("opt/py/bin/py") + "\nprint(1)\n"))
	assertCode(t, err, "")
	defer prep.Cleanup()
	if prep.Req.Path != f.path("opt/py/bin/python3") || prep.Req.Argv[0] != f.path("opt/py/bin/py") {
		t.Errorf("path %s, argv[0] %s: want the file itself run under the #! line's name", prep.Req.Path, prep.Req.Argv[0])
	}
}
