package hostpolicy

import (
	"os"
	"strings"
	"testing"

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
