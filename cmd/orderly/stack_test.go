package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// orderlyBin is the binary built once for tests that need a separate
// process (SIGKILL, serve restarts).
var orderlyBin string

// binDirEnv names, in a test binary run again inside a mount namespace
// (testenv.RerunInMountNamespace), the directory of the outer run's
// orderlyBin: the inner run uses it as it is, built, and leaves it.
const binDirEnv = "ORDERLY_TEST_BIN_DIR"

func TestMain(m *testing.M) {
	if role := os.Getenv(orphanRoleEnv); role != "" {
		os.Exit(orphanRole(role))
	}
	if dir := os.Getenv(binDirEnv); dir != "" {
		orderlyBin = filepath.Join(dir, "orderly")
		code := testenv.Run(m)
		removeFaultPGTemplate()
		os.Exit(code)
	}
	dir, err := os.MkdirTemp("", "orderly-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	orderlyBin = filepath.Join(dir, "orderly")
	out, err := exec.Command("go", "build", "-o", orderlyBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build orderly: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := testenv.Run(m)
	removeFaultPGTemplate()
	os.RemoveAll(dir)
	os.Exit(code)
}

// stack is a whole orderly in-process: real PostgreSQL, real NATS, the API
// on a loopback port and workers, wired exactly as the commands wire them.
type stack struct {
	t       testing.TB
	watcher *config.Watcher
	b       *backend
	api     *apiRunner
	url     string
	token   string
	dsn     string
	natsURL string
	workers map[string]*workerRunner
}

// testOverrides are the settings that make failures show up fast in tests.
func testOverrides(dsn, natsURL string) map[string]any {
	return map[string]any{
		"database_url":      dsn,
		"nats.url":          natsURL,
		"listen":            "127.0.0.1:0",
		"nats.ack_wait":     "2s",
		"nats.lease_ttl":    "2s",
		"nats.heartbeat":    "300ms",
		"log.level":         "warn",
		"worker.kill_grace": "500ms",
		// Tests poll as fast as they like; security_test.go sets its own.
		"limits.rate_per_ip":        "0",
		"limits.rate_per_principal": "0",
	}
}

func newStack(t testing.TB, hosts ...string) *stack {
	t.Helper()
	return newStackFrom(t, "", nil, hosts...)
}

// newStackFrom is newStack with a config file (path, "" for none) and
// extra overrides, which win over the file as flags do; a nil override
// removes a test default so the file decides.
func newStackFrom(t testing.TB, path string, overrides map[string]any, hosts ...string) *stack {
	t.Helper()
	return newStackFilled(t, path, overrides, nil, hosts...)
}

// newStackFilled is newStackFrom whose watcher passes every config it
// loads to fill first, as serve's does (serveCompatHosts).
func newStackFilled(t testing.TB, path string, overrides map[string]any, fill func(*config.Config), hosts ...string) *stack {
	t.Helper()
	ctx := t.Context()
	s := &stack{t: t, dsn: testenv.Postgres(t), natsURL: testenv.NATS(t), workers: map[string]*workerRunner{}}
	ov := testOverrides(s.dsn, s.natsURL)
	for k, v := range overrides {
		if v == nil {
			delete(ov, k) // leave the key to the file
		} else {
			ov[k] = v
		}
	}
	w, err := config.NewWatcherFilled(path, nil, ov, testenv.Logger(t), fill)
	if err != nil {
		t.Fatal(err)
	}
	s.watcher = w
	logger := testenv.Logger(t)
	s.b, err = openBackend(ctx, w.Current(), "test", logger)
	if err != nil {
		t.Fatal(err)
	}
	tok, sum := auth.NewToken()
	s.token = tok
	if _, err := s.b.store.EnsureAPIToken(ctx, postgres.APIToken{Name: "admin", SHA256: sum, Roles: []string{"admin"}}); err != nil {
		t.Fatal(err)
	}
	s.api, err = startAPI(ctx, w, s.b, logger)
	if err != nil {
		t.Fatal(err)
	}
	s.url = s.api.URL
	t.Cleanup(func() {
		s.api.shutdown()
		for _, wr := range s.workers {
			_ = wr.stop()
		}
		s.b.close()
	})
	for _, h := range hosts {
		s.startWorker(h)
	}
	return s
}

func (s *stack) startWorker(host string) {
	s.t.Helper()
	cfg := s.watcher.Current()
	cfg.Host = host
	wr, err := startWorker(s.t.Context(), cfg, s.b, testenv.Logger(s.t), s.watcher)
	if err != nil {
		s.t.Fatal(err)
	}
	s.workers[host] = wr
}

func (s *stack) stopWorker(host string) {
	if wr := s.workers[host]; wr != nil {
		_ = wr.stop()
		delete(s.workers, host)
	}
}

// requestBody is what a test's request sends for body: nothing for nil,
// a string or []byte as it is, anything else as JSON.
func requestBody(t testing.TB, body any) io.Reader {
	t.Helper()
	switch b := body.(type) {
	case nil:
		return nil
	case string:
		return strings.NewReader(b)
	case []byte:
		return bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		return bytes.NewReader(j)
	}
}

// do sends a request with the admin token and returns status and body.
func (s *stack) do(method, path string, body any, hdr ...string) (int, []byte) {
	s.t.Helper()
	req, err := http.NewRequestWithContext(s.t.Context(), method, s.url+path, requestBody(s.t, body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// submit posts an order and decodes the answer; want is the expected status.
func (s *stack) submit(body map[string]any, query string, want int) api.Order {
	s.t.Helper()
	code, b := s.do("POST", "/v1/orders"+query, body)
	if code != want {
		s.t.Fatalf("POST /v1/orders%s = %d, want %d: %s", query, code, want, b)
	}
	var o api.Order
	if err := json.Unmarshal(b, &o); err != nil {
		s.t.Fatalf("decode order: %v: %s", err, b)
	}
	return o
}

// get reads the order. Refused for the principal's rate (the stacks that
// keep limits.rate_per_principal: its 600 a minute), it asks again once
// the allowance refills, up to a minute: a poll that waits for a slow
// order (waitFor's every 20 ms, on a loaded machine) spends it, and the
// limit is not what these tests test.
func (s *stack) get(id uuid.UUID) api.Order {
	s.t.Helper()
	code, b := s.do("GET", "/v1/orders/"+id.String(), nil)
	for limited := time.Now(); code == http.StatusTooManyRequests && time.Since(limited) < time.Minute; {
		time.Sleep(time.Second) // the answer's retry_after_seconds
		code, b = s.do("GET", "/v1/orders/"+id.String(), nil)
	}
	if code != http.StatusOK {
		s.t.Fatalf("GET order = %d: %s", code, b)
	}
	var o api.Order
	if err := json.Unmarshal(b, &o); err != nil {
		s.t.Fatal(err)
	}
	return o
}

// waitFor polls the order until cond holds or the deadline passes.
func (s *stack) waitFor(id uuid.UUID, d time.Duration, cond func(api.Order) bool) api.Order {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for {
		o := s.get(id)
		if cond(o) {
			return o
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("order %s: condition not reached within %s; last status %s", id, d, o.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func terminal(o api.Order) bool {
	switch o.Status {
	case "queued", "running":
		return false
	}
	return true
}

func wantError(t testing.TB, code int, body []byte, wantStatus int, wantCode string) {
	t.Helper()
	if code != wantStatus {
		t.Fatalf("status = %d, want %d: %s", code, wantStatus, body)
	}
	var e api.ErrorBody
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("body is not the error envelope: %s", body)
	}
	if string(e.Error.Code) != wantCode {
		t.Fatalf("error code = %q, want %q: %s", e.Error.Code, wantCode, body)
	}
}

func ctxT(t testing.TB) context.Context { return t.Context() }

// replica starts a second API on its own connections to the same
// PostgreSQL and NATS, as another `orderly api` process would, and returns
// a stack view whose requests go to it.
func (s *stack) replica() *stack {
	s.t.Helper()
	logger := testenv.Logger(s.t)
	b, err := openBackend(s.t.Context(), s.watcher.Current(), "replica", logger)
	if err != nil {
		s.t.Fatal(err)
	}
	api, err := startAPI(s.t.Context(), s.watcher, b, logger)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() {
		api.shutdown()
		b.close()
	})
	r := *s
	r.b, r.api, r.url, r.workers = b, api, api.URL, nil
	return &r
}
