// Package systemd_test checks the shipped systemd units with systemd's own
// tools: they must verify cleanly, and `systemd-analyze security` must
// score each exactly as docs/deploy.md says (the API at most 2.0).
package systemd_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// units are the files under test; the socket is verified with its service.
var units = []string{"orderly-api.socket", "orderly-api.service", "orderly-worker.service", "orderly-serve.service"}

// systemdAnalyze finds systemd-analyze. Without it the test cannot run,
// which fails under CI=true (scripts/ensure-systemd.sh installs it).
func systemdAnalyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-analyze not found: install the Debian systemd package (scripts/ensure-systemd.sh)")
		}
		t.Skip("systemd-analyze not found; install the systemd package to run this test")
	}
	return p
}

// staged copies the units into a temporary directory with ExecStart
// pointing at an executable that exists here (this test binary), since
// verify checks that the command can be run.
func staged(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(b), "/usr/local/bin/orderly", self)
		if err := os.WriteFile(filepath.Join(dir, u), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestUnitsVerify runs `systemd-analyze verify` on every unit: no
// unknown keys, bad values or missing commands.
func TestUnitsVerify(t *testing.T) {
	sa := systemdAnalyze(t)
	dir := staged(t)
	args := []string{"verify"}
	for _, u := range units {
		args = append(args, filepath.Join(dir, u))
	}
	cmd := exec.Command(sa, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

var exposure = regexp.MustCompile(`Overall exposure level for (\S+): ([0-9.]+)`)

// commentScore finds the score a unit's header comment states.
var commentScore = regexp.MustCompile(`(?s)--offline=yes\S*\s+(?:#\s*)?scores it ([0-9]+\.[0-9])`)

// documentedScores reads the table of docs/deploy.md: rows
// "| `orderly-api.service` | 1.3 | …".
func documentedScores(t *testing.T) map[string]float64 {
	t.Helper()
	b, err := os.ReadFile("../../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(orderly-[a-z]+\\.service)` \\| ([0-9.]+) \\|")
	out := map[string]float64{}
	for _, m := range row.FindAllStringSubmatch(string(b), -1) {
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatal(err)
		}
		out[m[1]] = v
	}
	return out
}

// TestUnitsSecurityScores runs `systemd-analyze security --offline=yes`
// on each service and compares the exposure with the documented figure.
func TestUnitsSecurityScores(t *testing.T) {
	sa := systemdAnalyze(t)
	dir := staged(t)
	docs := documentedScores(t)
	for _, u := range units {
		if !strings.HasSuffix(u, ".service") {
			continue
		}
		t.Run(u, func(t *testing.T) {
			want, ok := docs[u]
			if !ok {
				t.Fatalf("docs/deploy.md has no score for %s", u)
			}
			cmd := exec.Command(sa, "security", "--offline=yes", "--no-pager", filepath.Join(dir, u))
			cmd.Dir = dir
			out, _ := cmd.CombinedOutput() // exits non-zero above its --threshold only
			m := exposure.FindStringSubmatch(string(out))
			if m == nil {
				t.Fatalf("no exposure level in:\n%s", out)
			}
			got, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("%s scores %.1f, docs/deploy.md says %.1f", u, got, want)
			}
			// The unit's own comment says its score too.
			b, err := os.ReadFile(u)
			if err != nil {
				t.Fatal(err)
			}
			if c := commentScore.FindStringSubmatch(string(b)); c == nil || c[1] != strconv.FormatFloat(got, 'f', 1, 64) {
				t.Errorf("%s's comment gives its score as %v; it scores %.1f", u, c, got)
			}
			if u == "orderly-api.service" && got > 2.0 {
				t.Errorf("the API scores %.1f; it must stay at or below 2.0", got)
			}
		})
	}
}

// TestUnitsDelegateOrderCgroups: the units that run a worker delegate its
// cgroup (Delegate=yes), which is what makes worker.cgroup: auto give each
// order a cgroup of its own under systemd (auto never writes a cgroup
// systemd manages without delegation), and leave /sys/fs/cgroup writable
// (no ProtectControlGroups=yes, which would mount it read-only).
func TestUnitsDelegateOrderCgroups(t *testing.T) {
	for _, u := range []string{"orderly-worker.service", "orderly-serve.service"} {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		var delegate, protect string
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Delegate="); ok {
				delegate = v
			}
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "ProtectControlGroups="); ok {
				protect = v
			}
		}
		if delegate != "yes" {
			t.Errorf("%s: Delegate=%q, want yes: its orders would run without cgroups", u, delegate)
		}
		if protect != "" && protect != "no" {
			t.Errorf("%s: ProtectControlGroups=%s: the worker could not make its orders' cgroups", u, protect)
		}
	}
}
