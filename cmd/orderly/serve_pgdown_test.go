package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orderly-run/orderly/api"
)

// TestServeWithItsPostgreSQLThatWillNotStart: serve's managed PostgreSQL
// killed, and kept from starting again (a line an operator added to
// postgresql.auto.conf that postgres cannot parse), as an operator meets
// it. Each REST request answers 503 `unavailable` at once, never a 500
// or a hang; /readyz says postgres is unavailable, and in reasons.postgres
// since when and after how many tries, and /v1/status why (postgres's
// FATAL line); the log says once why
// the cluster does not start (postgres's own line), not at each of the
// supervisor's tries (every 2 s); with the line removed the cluster
// comes back by itself within a try and orders run again; stopped
// (SIGTERM) while the cluster cannot start, serve exits at once and
// leaves no process of the cluster behind.
func TestServeWithItsPostgreSQLThatWillNotStart(t *testing.T) {
	s := newServeFaults(t)
	autoConf := filepath.Join(s.dataDir, "pg", "data", "postgresql.auto.conf")
	pgLog := filepath.Join(s.dataDir, "pg", "postgres.log")
	good, err := os.ReadFile(autoConf)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	call := func(method, path string, body any) (int, []byte, time.Duration) {
		t.Helper()
		var r *bytes.Reader
		if body == nil {
			r = bytes.NewReader(nil)
		} else {
			b, _ := json.Marshal(body)
			r = bytes.NewReader(b)
		}
		req, _ := http.NewRequestWithContext(t.Context(), method, s.apiURL+path, r)
		req.Header.Set("Authorization", "Bearer "+s.token)
		req.Header.Set("Content-Type", "application/json")
		began := time.Now()
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v (serve must answer, not hang)", method, path, err)
		}
		defer resp.Body.Close()
		var out bytes.Buffer
		_, _ = out.ReadFrom(resp.Body)
		return resp.StatusCode, out.Bytes(), time.Since(began)
	}
	submit := func() api.Order {
		t.Helper()
		code, b, _ := call("POST", "/v1/orders?wait=60", map[string]any{"host": "srv", "command": "true"})
		var o api.Order
		if code != http.StatusOK || json.Unmarshal(b, &o) != nil || o.Status != "succeeded" {
			t.Fatalf("an order with PostgreSQL up: %d %s, want it succeeded", code, b)
		}
		return o
	}
	before := submit()
	unstartable := func() {
		t.Helper()
		pid := s.postmaster(t)
		if err := os.WriteFile(autoConf, append(append([]byte{}, good...), "= a line postgres cannot parse\n"...), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	// Each try of the supervisor is one FATAL line of postgres's.
	fatalTries := func() int {
		b, _ := os.ReadFile(pgLog)
		return bytes.Count(b, []byte(`FATAL:  configuration file "postgresql.auto.conf" contains errors`))
	}

	logFrom, down := s.sv.logSize(), time.Now()
	unstartable()
	waitUntil(t, 60*time.Second, "/readyz to say postgres is unavailable", func() bool {
		code, b, _ := call("GET", "/readyz", nil)
		return code == http.StatusServiceUnavailable && strings.Contains(string(b), `"postgres":"unavailable"`)
	})
	for _, r := range []struct{ method, path string }{
		{"POST", "/v1/orders"}, {"POST", "/v1/orders?wait=5"},
		{"GET", "/v1/orders/" + before.ID.String()}, {"GET", "/v1/orders"}, {"GET", "/v1/hosts"},
	} {
		var body any
		if r.method == "POST" {
			body = map[string]any{"host": "srv", "command": "true"}
		}
		code, b, took := call(r.method, r.path, body)
		var eb api.ErrorBody
		if code != http.StatusServiceUnavailable || json.Unmarshal(b, &eb) != nil || eb.Error.Code != "unavailable" {
			t.Errorf("%s %s with PostgreSQL down: %d %s, want 503 unavailable", r.method, r.path, code, b)
		}
		if took > 10*time.Second {
			t.Errorf("%s %s with PostgreSQL down took %s, want an answer at once", r.method, r.path, took)
		}
	}
	waitUntil(t, 60*time.Second, "three of the supervisor's tries", func() bool { return fatalTries() >= 3 })
	b, _ := os.ReadFile(s.sv.log)
	logged := string(b[logFrom:])
	// One line, then one a minute (logging.Streak).
	if n, most := strings.Count(logged, "postgresql is not running and does not start again"), 1+int(time.Since(down)/time.Minute); n < 1 || n > most {
		t.Errorf("%d lines of `does not start again` for %d tries, want 1 (and one more a minute):\n%s", n, fatalTries(), logged)
	}
	if !strings.Contains(logged, "contains errors") {
		t.Errorf("the log does not say why the cluster does not start (postgres's line):\n%s", logged)
	}
	// /readyz says it too: since when and after how many tries, and
	// where to read why; not postgres's message, which names paths, to
	// its anonymous callers. The authenticated /v1/status has it.
	code, rb, _ := call("GET", "/readyz", nil)
	var ready struct {
		Checks  map[string]string `json:"checks"`
		Reasons map[string]string `json:"reasons"`
	}
	if err := json.Unmarshal(rb, &ready); err != nil || code != http.StatusServiceUnavailable || ready.Checks["postgres"] != "unavailable" {
		t.Fatalf("/readyz with the cluster failing to start: %d %s (%v)", code, rb, err)
	}
	why := ready.Reasons["postgres"]
	m := regexp.MustCompile(`failed to start since (\S+) \((\d+) tries\); why: postgres_not_starting on /v1/status`).FindStringSubmatch(why)
	if m == nil || strings.Contains(why, "postgresql.auto.conf") || strings.Contains(why, s.dataDir) {
		t.Errorf("/readyz's reasons.postgres %q does not say since when, how many tries and where to read why, or gives postgres's message", why)
	} else {
		since, err := time.Parse(time.RFC3339, m[1])
		if tries, _ := strconv.Atoi(m[2]); err != nil || since.Before(down.Add(-time.Second)) || since.After(time.Now()) || tries < 1 {
			t.Errorf("/readyz's reasons.postgres %q: since %v (%v), the cluster killed at %v", why, since, err, down.UTC())
		}
	}

	code, sb, _ := call("GET", "/v1/status", nil)
	var status struct {
		NotStarting *struct {
			Since time.Time `json:"since"`
			Tries int       `json:"tries"`
			Cause string    `json:"cause"`
		} `json:"postgres_not_starting"`
	}
	if err := json.Unmarshal(sb, &status); err != nil || code != http.StatusOK || status.NotStarting == nil ||
		status.NotStarting.Cause != `FATAL:  configuration file "postgresql.auto.conf" contains errors` || status.NotStarting.Tries < 1 {
		t.Errorf("/v1/status with the cluster failing to start: %d %s (%v), want postgres_not_starting with postgres's message", code, sb, err)
	}

	// The cause removed: back within a try, orders run again.
	if err := os.WriteFile(autoConf, good, 0o600); err != nil {
		t.Fatal(err)
	}
	waitHTTPOK(t, s.apiURL+"/readyz", 60*time.Second, s.sv)
	// Logged once pg_ctl returns, which may be after /readyz's ping.
	waitUntil(t, 30*time.Second, "a line saying the cluster was started again", func() bool {
		return s.sv.loggedSince(logFrom, "postgresql was not running; started it again")
	})
	if _, rb, _ := call("GET", "/readyz", nil); strings.Contains(string(rb), "reasons") {
		t.Errorf("/readyz once the cluster started again still gives a reason: %s", rb)
	}
	if _, sb, _ := call("GET", "/v1/status", nil); strings.Contains(string(sb), "postgres_not_starting") {
		t.Errorf("/v1/status once the cluster started again: %s", sb)
	}
	after := submit()
	if code, b, _ := call("GET", "/v1/orders/"+before.ID.String(), nil); code != http.StatusOK {
		t.Errorf("the order from before the outage: %d %s", code, b)
	}

	// Stopped while the cluster cannot start.
	unstartable()
	tries := fatalTries()
	waitUntil(t, 60*time.Second, "a failed try", func() bool { return fatalTries() > tries })
	began := time.Now()
	s.sv.signal(syscall.SIGTERM)
	if !s.sv.waitExit(30 * time.Second) {
		t.Fatalf("serve did not stop within 30 s of SIGTERM with its PostgreSQL down")
	}
	if code := s.sv.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("serve's exit code after SIGTERM: %d, want 0:\n%s", code, logTail(s.sv.log, 20))
	}
	t.Logf("stopped in %s; order %s ran after the recovery", time.Since(began).Round(time.Millisecond), after.ID)
	if s.sv.logged(`msg="stop postgresql"`) {
		t.Errorf("serve's stop tried to stop a cluster that was not running:\n%s", logTail(s.sv.log, 20))
	}
	dataDir, err := os.Stat(filepath.Join(s.dataDir, "pg", "data"))
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cwd, err := os.Stat("/proc/" + e.Name() + "/cwd"); err == nil && os.SameFile(cwd, dataDir) && aliveProcess(pid) {
			t.Errorf("process %d of the cluster is left after serve stopped", pid)
		}
	}
}
