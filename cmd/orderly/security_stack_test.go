package main

import (
	"bytes"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/testenv"
)

// secStack is a stack whose configuration comes from a real file, so that
// reload and drift can be exercised, with overrides over testOverrides.
type secStack struct {
	*stack
	path string // the config file
}

// newSecStack starts the API and workers for hosts like newStack does, but
// loads yamlText from a file (the overrides still win over it, as flags
// do). Keys that must be reloadable belong in the file.
func newSecStack(t *testing.T, yamlText string, overrides map[string]any, hosts ...string) *secStack {
	t.Helper()
	path := filepath.Join(t.TempDir(), "orderly.yaml")
	if err := os.WriteFile(path, []byte(yamlText), 0o600); err != nil {
		t.Fatal(err)
	}
	// The rate limits are the file's to set (see TestSecurityRateLimits).
	ov := map[string]any{"limits.rate_per_ip": nil, "limits.rate_per_principal": nil}
	maps.Copy(ov, overrides)
	return &secStack{stack: newStackFrom(t, path, ov, hosts...), path: path}
}

// startWorkerWith starts a worker for host whose host policy is the
// running config's, changed by mod.
func (s *secStack) startWorkerWith(host string, mod func(*config.Worker)) {
	s.t.Helper()
	cfg := s.watcher.Current()
	cfg.Host = host
	mod(&cfg.Worker)
	wr, err := startWorker(s.t.Context(), cfg, s.b, testenv.Logger(s.t), nil)
	if err != nil {
		s.t.Fatal(err)
	}
	s.workers[host] = wr
}

// writeConfig replaces the config file on disk (not the running config).
func (s *secStack) writeConfig(yamlText string) {
	s.t.Helper()
	if err := os.WriteFile(s.path, []byte(yamlText), 0o600); err != nil {
		s.t.Fatal(err)
	}
}

// call is one raw HTTP request: token "" sends no Authorization header;
// hdr are name/value pairs; client nil is the default client.
type call struct {
	method, path string
	body         any
	token        string
	hdr          []string
	client       *http.Client
}

// send performs c and returns the response (body already read) and body.
func (s *secStack) send(c call) (*http.Response, []byte) {
	s.t.Helper()
	var r io.Reader
	switch b := c.body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	case io.Reader:
		r = b
	default:
		j, err := json.Marshal(b)
		if err != nil {
			s.t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(s.t.Context(), c.method, s.url+c.path, r)
	if err != nil {
		s.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(c.hdr); i += 2 {
		if c.hdr[i+1] == "" {
			req.Header.Del(c.hdr[i])
		} else {
			req.Header.Set(c.hdr[i], c.hdr[i+1])
		}
	}
	client := c.client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", c.method, c.path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// clientFrom returns an HTTP client whose connections come from the
// loopback address ip (any of 127.0.0.0/8 reaches the API), so a test can
// be a different client, or a reverse proxy, without leaving the machine.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// rejection is one row of the audit table.
type rejection struct {
	ID        int64
	Principal string
	ClientIP  string
	Method    string
	Path      string
	Status    int
	Code      string
	Reason    string
	Request   string
	Row       string // the whole row as text, to search for leaks
}

func (s *secStack) rejections() []rejection {
	s.t.Helper()
	rows, err := s.b.pool.Query(ctxT(s.t), `SELECT id, principal, client_ip, method, path, status, code, reason,
		request::text, r::text FROM rejections r ORDER BY id`)
	if err != nil {
		s.t.Fatal(err)
	}
	defer rows.Close()
	var out []rejection
	for rows.Next() {
		var r rejection
		if err := rows.Scan(&r.ID, &r.Principal, &r.ClientIP, &r.Method, &r.Path, &r.Status, &r.Code, &r.Reason,
			&r.Request, &r.Row); err != nil {
			s.t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		s.t.Fatal(err)
	}
	return out
}

// count runs a count(*) query.
func (s *secStack) count(query string, args ...any) int {
	s.t.Helper()
	return countRows(s.t, s.b.pool, query, args...)
}

// countRows runs a count(*) query on pool.
func countRows(t testing.TB, pool *pgxpool.Pool, query string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(ctxT(t), query, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// checkAudit checks every audit row: a stable code, a reason, a client
// address, and none of secrets (tokens, env values) anywhere in the row.
func (s *secStack) checkAudit(secrets ...string) []rejection {
	s.t.Helper()
	rows := s.rejections()
	for _, r := range rows {
		if r.Code == "" || r.Reason == "" || r.Status < 400 || r.Status > 499 {
			s.t.Errorf("audit row %d lacks code, reason or a 4xx status: %+v", r.ID, r)
		}
		if net.ParseIP(r.ClientIP) == nil {
			s.t.Errorf("audit row %d: client_ip %q is not an address", r.ID, r.ClientIP)
		}
		for _, sec := range secrets {
			if sec != "" && strings.Contains(r.Row, sec) {
				s.t.Errorf("audit row %d contains a secret (%.12s…): %s", r.ID, sec, r.Row)
			}
		}
	}
	return rows
}

// assertReady checks /readyz answers 200 (through client, default if nil).
func (s *secStack) assertReady(client *http.Client) {
	s.t.Helper()
	resp, b := s.send(call{method: "GET", path: "/readyz", client: client})
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("/readyz = %d: %s", resp.StatusCode, b)
	}
}

// refusal is how a hostile order ended: refused by the API with a 4xx, or
// accepted and then rejected by the worker.
type refusal struct {
	status int    // HTTP status of the submit
	code   string // error code when refused by the API
	order  api.Order
}

// submitRefused submits body and requires that it never runs: either the
// API refuses it with a 4xx and the error envelope (and records an audit
// row), or the worker rejects it (status rejected, with a reason).
func (s *secStack) submitRefused(body any) refusal {
	s.t.Helper()
	before := s.count(`SELECT count(*) FROM rejections`)
	resp, b := s.send(call{method: "POST", path: "/v1/orders", body: body, token: s.token})
	switch {
	case resp.StatusCode == http.StatusAccepted || resp.StatusCode == http.StatusOK:
		var o api.Order
		if err := json.Unmarshal(b, &o); err != nil {
			s.t.Fatalf("decode order: %v: %s", err, b)
		}
		o = s.waitFor(o.ID, 30*time.Second, terminal)
		if o.Status != "rejected" || o.Result == nil || o.Result.Error == nil || *o.Result.Error == "" {
			s.t.Fatalf("order %s (%v): status %s, want rejected with a reason; result %+v", o.Command, o.Args, o.Status, o.Result)
		}
		if o.StartedAt != nil && o.Result.ExitCode != nil {
			s.t.Fatalf("rejected order %s has an exit code: it ran", o.ID)
		}
		return refusal{status: resp.StatusCode, order: o}
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		var e api.ErrorBody
		if err := json.Unmarshal(b, &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
			s.t.Fatalf("status %d without the error envelope: %s", resp.StatusCode, b)
		}
		if after := s.count(`SELECT count(*) FROM rejections`); after != before+1 {
			s.t.Fatalf("refusal %d %s recorded %d audit rows, want 1", resp.StatusCode, e.Error.Code, after-before)
		}
		return refusal{status: resp.StatusCode, code: string(e.Error.Code)}
	}
	s.t.Fatalf("submit answered %d: %s", resp.StatusCode, b)
	return refusal{}
}

// waitUntil polls cond every 20ms until it holds or d passes
// (testenv.WaitUntil, under the name this package's tests use).
func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testenv.WaitUntil(t, d, what, cond)
}

// script writes an executable shell script that appends its name to
// marker when it runs, and returns its path. Only shell builtins are used,
// so it works with any PATH.
func script(t testing.TB, path, marker string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	body := "#!/bin/sh\necho " + filepath.Base(path) + " >> '" + marker + "'\n"
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// ran reports what the scripts writing to marker recorded.
func ran(t testing.TB, marker string) string {
	t.Helper()
	b, err := os.ReadFile(marker)
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
