package deploy

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/metrics"
)

// promtool finds Prometheus's promtool on PATH or in bin/ (where
// scripts/ensure-promtool.sh puts it). Without it the test fails under
// CI=true and is skipped elsewhere.
func promtool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	p, err := filepath.Abs("../bin/promtool")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("promtool not found on PATH or in bin/: run scripts/ensure-promtool.sh")
	}
	t.Skip("promtool not found: run scripts/ensure-promtool.sh")
	return ""
}

// TestPrometheusAlerts checks the alert rules with promtool and runs their
// unit tests (deploy/prometheus/orderly-alerts.test.yaml).
func TestPrometheusAlerts(t *testing.T) {
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", "orderly-alerts.yaml"},
		{"test", "rules", "orderly-alerts.test.yaml"},
	} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = "prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestPrometheusAlertMetricsExist checks that every orderly_ metric the
// rules use is one orderly exports, so a renamed metric cannot leave an
// alert that silently never fires.
func TestPrometheusAlertMetricsExist(t *testing.T) {
	rules, err := os.ReadFile("prometheus/orderly-alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	srcs, err := filepath.Glob("../internal/metrics/*.go")
	if err != nil {
		t.Fatal(err)
	}
	var exported string
	for _, f := range srcs {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		exported += string(b)
	}
	used := regexp.MustCompile(`orderly_[a-z_]+`).FindAllString(string(rules), -1)
	slices.Sort(used)
	for _, name := range slices.Compact(used) {
		if !strings.Contains(exported, `"`+name+`"`) {
			t.Errorf("the rules use %s, which internal/metrics does not export", name)
		}
	}
	// The process collector's metrics are the client library's: ask a
	// registry for them.
	rec := httptest.NewRecorder()
	metrics.New().Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	procs := regexp.MustCompile(`process_[a-z_]+`).FindAllString(string(rules), -1)
	slices.Sort(procs)
	for _, name := range slices.Compact(procs) {
		if !strings.Contains(rec.Body.String(), "\n"+name+" ") {
			t.Errorf("the rules use %s, which orderly's registry does not export", name)
		}
	}
}
