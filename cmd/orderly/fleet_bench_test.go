package main

// Fleet measurements (issue 11, docs/benchmarks.md "Fleet"): `orderly api`
// and `orderly fleet-sim` with N simulated hosts against one nats-server
// and PostgreSQL, measuring startup, idle load, memory per host, a fan-out
// of one command to every host and submit throughput. Opt-in and slow:
// `make fleet-bench` sets ORDERLY_FLEET=100,1000.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/postgres"
)

// fleetConfig is the configuration of the API and the fleet: the defaults
// a production fleet would run with (heartbeat 5 s, lease 15 s), not the
// fault suite's fast ones, and warnings only in the logs.
const fleetConfig = `database_url: %q
nats:
  url: %q
log:
  level: warn
limits:
  rate_per_ip: 0
  rate_per_principal: 0
worker:
  command_path: [/usr/bin, /bin]
`

func TestFleetScale(t *testing.T) {
	spec := os.Getenv("ORDERLY_FLEET")
	if spec == "" {
		t.Skip("fleet measurements: run `make fleet-bench` (ORDERLY_FLEET=100,1000)")
	}
	for _, f := range strings.Split(spec, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			t.Fatalf("ORDERLY_FLEET=%q: want host counts like 100,1000", spec)
		}
		t.Run(strconv.Itoa(n), func(t *testing.T) { measureFleet(t, n) })
	}
}

// fleetClient is the API as the measurement sees it.
type fleetClient struct {
	t     *testing.T
	url   string
	token string
	http  *http.Client
}

func (c *fleetClient) do(method, path string, body any, out any) int {
	c.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.url+path, r)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		_ = json.Unmarshal(b, out)
	}
	return resp.StatusCode
}

// natsCounters reads a nats-server's message counters from its monitoring
// port.
func natsCounters(t *testing.T, httpPort int) (in, out int64) {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/varz", httpPort))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		InMsgs  int64 `json:"in_msgs"`
		OutMsgs int64 `json:"out_msgs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v.InMsgs, v.OutMsgs
}

// rssKiB is a process's resident memory.
func rssKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

func measureFleet(t *testing.T, n int) {
	dir, err := os.MkdirTemp("", "ofs-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	s := &faultStack{t: t, dir: dir}
	t.Cleanup(s.dumpLogsOnFailure)
	s.pg = startFaultPG(t, dir)
	s.nats = startNATSServer(t, dir)
	ctx := t.Context()
	s.pool, err = postgres.Open(ctx, s.pg.dsn())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.pool.Close)
	tok, sum := auth.NewToken()
	if _, err := postgres.New(s.pool).EnsureAPIToken(ctx, postgres.APIToken{Name: "admin", SHA256: sum, Roles: []string{"admin"}}); err != nil {
		t.Fatal(err)
	}
	s.conf = filepath.Join(dir, "orderly.yaml")
	if err := os.WriteFile(s.conf, fmt.Appendf(nil, fleetConfig, s.pg.dsn(), s.nats.url()), 0o644); err != nil {
		t.Fatal(err)
	}
	listen := "127.0.0.1:" + strconv.Itoa(freePort(t))
	s.apiURL = "http://" + listen
	s.api = startFaultProc(t, "api", filepath.Join(dir, "api.log"), s.env(), orderlyBin, "api", "--config", s.conf, "--listen", listen)
	waitHTTPOK(t, s.apiURL+"/readyz", 60*time.Second, s.api)
	c := &fleetClient{t: t, url: s.apiURL, token: tok, http: &http.Client{Timeout: 5 * time.Minute}}

	// Startup: every host online (its heartbeat in KV).
	began := time.Now()
	fleet := startFaultProc(t, "fleet", filepath.Join(dir, "fleet.log"), s.env(), orderlyBin,
		"fleet-sim", "--config", s.conf, "--hosts", strconv.Itoa(n))
	waitUntil(t, 10*time.Minute, fmt.Sprintf("%d hosts online", n), func() bool {
		var hl struct {
			Hosts []struct {
				Online bool `json:"online"`
			} `json:"hosts"`
		}
		if c.do("GET", "/v1/hosts", nil, &hl) != http.StatusOK {
			return false
		}
		online := 0
		for _, h := range hl.Hosts {
			if h.Online {
				online++
			}
		}
		return online == n
	})
	t.Logf("%d hosts: all online %s after the fleet process started", n, time.Since(began).Round(10*time.Millisecond))

	// Idle: what heartbeats and leases cost NATS and PostgreSQL.
	const idle = 20 * time.Second
	in0, out0 := natsCounters(t, s.nats.httpPort)
	var commits0 int64
	if err := s.pool.QueryRow(ctx, `SELECT sum(xact_commit)::bigint FROM pg_stat_database`).Scan(&commits0); err != nil {
		t.Fatal(err)
	}
	pause(ctx, idle)
	in1, out1 := natsCounters(t, s.nats.httpPort)
	var commits1 int64
	if err := s.pool.QueryRow(ctx, `SELECT sum(xact_commit)::bigint FROM pg_stat_database`).Scan(&commits1); err != nil {
		t.Fatal(err)
	}
	rss := rssKiB(fleet.pid())
	t.Logf("%d hosts idle: NATS %.0f msgs/s in, %.0f msgs/s out; PostgreSQL %.1f commits/s; fleet process RSS %d MiB, %.0f KiB per host",
		n, float64(in1-in0)/idle.Seconds(), float64(out1-out0)/idle.Seconds(), float64(commits1-commits0)/idle.Seconds(),
		rss/1024, float64(rss)/float64(n))

	// Fan-out: one command to every host.
	var batch struct {
		BatchID uuid.UUID `json:"batch_id"`
	}
	began = time.Now()
	code := c.do("POST", "/v1/orders", map[string]any{"hosts": []string{"sim-*"}, "command": "true"}, &batch)
	answered := time.Since(began)
	if code != http.StatusAccepted && code != http.StatusOK {
		t.Fatalf("fan-out answered %d", code)
	}
	var done int
	waitUntil(t, 10*time.Minute, "every fan-out order finished", func() bool {
		_ = s.pool.QueryRow(ctx, `SELECT count(*) FROM orders WHERE batch_id = $1 AND status NOT IN ('queued','running')`, batch.BatchID).Scan(&done)
		return done == n
	})
	lastResult := time.Since(began)
	var summary struct {
		Counts map[string]int `json:"counts"`
	}
	waitUntil(t, time.Minute, "the batch summary", func() bool {
		return c.do("GET", "/v1/batches/"+batch.BatchID.String(), nil, &summary) == http.StatusOK && summary.Counts["succeeded"] == n
	})
	t.Logf("%d hosts fan-out: API answered in %s, last result in PostgreSQL %s after the submit, batch summary complete after %s (%v)",
		n, answered.Round(time.Millisecond), lastResult.Round(time.Millisecond), time.Since(began).Round(time.Millisecond), summary.Counts)

	// Submit throughput with n consumers on the orders stream.
	const submitters, window = 8, 15 * time.Second
	var accepted, refused atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(window)
	for range submitters {
		wg.Go(func() {
			for time.Now().Before(stop) {
				host := fmt.Sprintf("sim-%d", 1+rand.IntN(n))
				if c.do("POST", "/v1/orders", map[string]any{"host": host, "command": "true"}, nil) == http.StatusAccepted {
					accepted.Add(1)
				} else {
					refused.Add(1)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d hosts submit throughput: %.0f orders/s accepted by %d concurrent REST clients (%d refused)",
		n, float64(accepted.Load())/window.Seconds(), submitters, refused.Load())
	took := s.waitDrained(10 * time.Minute)
	t.Logf("%d hosts: the %d orders drained %s after the load", n, accepted.Load(), took.Round(10*time.Millisecond))
}
