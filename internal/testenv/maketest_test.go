package testenv

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var ensureScript = regexp.MustCompile(`scripts/ensure-[a-z]+\.sh`)

// TestMakeTestInstallsEveryTestsTool: the README's `make test` runs every
// test with CI=true, under which a test whose tool is missing fails and
// names the script that installs it. `make test` ran only the PostgreSQL
// and promtool scripts, so on a fresh machine the units, socket
// activation, systemd user manager, polkit and web UI tests failed until
// the scripts were run by hand (only .ci/run did).
func TestMakeTestInstallsEveryTestsTool(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	var named []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "bin") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, s := range ensureScript.FindAllString(string(b), -1) {
			if !slices.Contains(named, s) {
				named = append(named, s)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(named) == 0 {
		t.Fatal("no test names a scripts/ensure-*.sh; the walk found nothing")
	}
	// -n prints what `make test` would run without running it.
	cmd := exec.Command("make", "-n", "test")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n test: %v\n%s", err, out)
	}
	for _, s := range named {
		if !strings.Contains(string(out), "./"+s) {
			t.Errorf("a test names %s, but `make test` does not run it:\n%s", s, out)
		}
	}
}
