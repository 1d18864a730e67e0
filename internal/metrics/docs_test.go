package metrics

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// described is one of orderly's metrics as the code defines it.
type described struct {
	kind   string // counter, histogram, gauge
	labels []string
}

// definedMetrics lists orderly's own metrics: the collectors a Metrics
// holds and those WatchFleet and WatchQueues register (all gauges),
// WatchForeignGenerations's counter and WatchAPICertificate's gauge.
func definedMetrics(t *testing.T) map[string]described {
	out := map[string]described{}
	add := func(c prometheus.Collector, kind string) {
		ch := make(chan *prometheus.Desc, 16)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			m := regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`).FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("cannot read %s", d)
			}
			var labels []string
			if m[2] != "" {
				labels = strings.Split(m[2], ",")
			}
			out[m[1]] = described{kind, labels}
		}
	}
	m := New()
	vecs := map[prometheus.Collector]string{m.submitted: "counter", m.finished: "counter",
		m.execDuration: "histogram", m.rejections: "counter", m.httpDuration: "histogram",
		m.unavailable: "counter", m.leaseFailed: "counter", m.jwksRefresh: "counter", m.restores: "counter",
		m.restoreGuard: "gauge"}
	collector := reflect.TypeFor[prometheus.Collector]()
	fields := 0
	for f := range reflect.TypeFor[Metrics]().Fields() {
		if f.Type.Implements(collector) && f.Type != reflect.TypeFor[*prometheus.Registry]() {
			fields++
		}
	}
	if fields != len(vecs) {
		t.Fatalf("Metrics has %d collectors, this test knows %d: add the new one to it", fields, len(vecs))
	}
	for c, kind := range vecs {
		add(c, kind)
	}
	add(&fleetCollector{}, "gauge")
	add(&queueCollector{}, "gauge")
	add(prometheus.NewCounterFunc(foreignGenerationsOpts, nil), "counter")
	add(prometheus.NewGaugeFunc(apiCertificateExpiryOpts, nil), "gauge")
	return out
}

// TestObservabilityDocListsTheMetrics checks the metrics table of
// docs/observability.md against the code, both ways: every metric it
// lists exists with that type and those labels, and every orderly_ metric
// the code defines is listed.
func TestObservabilityDocListsTheMetrics(t *testing.T) {
	doc, err := os.ReadFile("../../docs/observability.md")
	if err != nil {
		t.Fatal(err)
	}
	defined := definedMetrics(t)
	if len(defined) < 10 {
		t.Fatalf("found only %d metrics in the code", len(defined))
	}
	row := regexp.MustCompile("^\\| `(orderly_[a-z_]+)` \\| ([a-z]+) \\|([^|]*)\\|")
	listed := map[string]bool{}
	for i, l := range strings.Split(string(doc), "\n") {
		m := row.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		name, kind := m[1], m[2]
		listed[name] = true
		// The labels are the backquoted words outside parentheses:
		// "`source` (`rest`, …)" is the label source.
		var labels []string
		depth := 0
		for _, part := range regexp.MustCompile("\\(|\\)|`[a-z_]+`").FindAllString(m[3], -1) {
			switch part {
			case "(":
				depth++
			case ")":
				depth--
			default:
				if depth == 0 {
					labels = append(labels, strings.Trim(part, "`"))
				}
			}
		}
		d, ok := defined[name]
		switch {
		case !ok:
			t.Errorf("docs/observability.md:%d: %s is no metric of internal/metrics", i+1, name)
		case d.kind != kind:
			t.Errorf("docs/observability.md:%d: %s is a %s, not a %s", i+1, name, d.kind, kind)
		case !slices.Equal(slices.Sorted(slices.Values(d.labels)), slices.Sorted(slices.Values(labels))):
			t.Errorf("docs/observability.md:%d: %s has the labels %q, not %q", i+1, name, d.labels, labels)
		}
	}
	for name := range defined {
		if !listed[name] {
			t.Errorf("docs/observability.md does not list %s", name)
		}
	}
}

// TestUnavailableHelpNamesTheCausesTheDocsList: the HELP of
// orderly_http_unavailable_total, what an operator reads in the scrape or
// in Grafana's tooltip, names every cause of a 503 that
// docs/observability.md names for it. Vigrid's tamper check answers 503
// on every compat request while the config file differs from the loaded
// one; a HELP that omitted it sent whoever saw the counter climb to the
// publish path and the dependencies only.
func TestUnavailableHelpNamesTheCausesTheDocsList(t *testing.T) {
	doc, err := os.ReadFile("../../docs/observability.md")
	if err != nil {
		t.Fatal(err)
	}
	var row string
	for l := range strings.SplitSeq(string(doc), "\n") {
		if strings.HasPrefix(l, "| `orderly_http_unavailable_total` |") {
			row = l
		}
	}
	if row == "" {
		t.Fatal("docs/observability.md lists no orderly_http_unavailable_total")
	}
	ch := make(chan *prometheus.Desc, 1)
	New().unavailable.Describe(ch)
	m := regexp.MustCompile(`help: "([^"]*)"`).FindStringSubmatch((<-ch).String())
	if m == nil {
		t.Fatal("cannot read the metric's help")
	}
	help := m[1]
	// Each cause by the word both texts must use for it.
	for _, cause := range []string{"publish", "dependency", "tamper"} {
		if !strings.Contains(row, cause) {
			t.Errorf("docs/observability.md's row no longer names the cause %q: update this test", cause)
		} else if !strings.Contains(help, cause) {
			t.Errorf("the help %q does not name the cause %q that docs/observability.md lists", help, cause)
		}
	}
}
