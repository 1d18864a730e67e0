package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/migrations"
)

// TestSchemaRolledBackStopsServers: `orderly api` and `orderly worker`
// check the schema at start, and again while they run. A newer schema
// (a rolling upgrade migrates before it replaces the processes) leaves
// them running; one rolled back below their binary's with `orderly
// migrate down` stops them with an error saying why: the rollback removed
// what their statements count on (00011's trigger, without which a
// finished order kept its env values).
func TestSchemaRolledBackStopsServers(t *testing.T) {
	leavesNoSubreaper(t) // its `orderly worker` runs in this process
	old := schemaCheck
	schemaCheck = 100 * time.Millisecond
	defer func() { schemaCheck = old }()
	// The checks that passed are counted per server (its store): "still
	// running on a newer schema" holds once each has checked it, not after
	// a time a loaded machine may spend without a check.
	var (
		checksMu sync.Mutex
		checks   = map[*postgres.Store]int{}
	)
	schemaChecked = func(store *postgres.Store, err error) {
		if err != nil {
			return // a stop, which the test sees as one
		}
		checksMu.Lock()
		checks[store]++
		checksMu.Unlock()
	}
	defer func() { schemaChecked = nil }()
	checked := func() map[*postgres.Store]int {
		checksMu.Lock()
		defer checksMu.Unlock()
		return maps.Clone(checks)
	}
	dsn, natsURL := testenv.Postgres(t), testenv.NATS(t)
	conf := filepath.Join(t.TempDir(), "orderly.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("listen: 127.0.0.1:0\ndatabase_url: %q\nnats:\n  url: %q\n", dsn, natsURL)), 0o600); err != nil {
		t.Fatal(err)
	}
	type server struct {
		name string
		out  testenv.LogBuffer
		done chan error
	}
	ctx, cancel := context.WithCancel(t.Context())
	start := func(args ...string) *server {
		s := &server{name: args[0], done: make(chan error, 1)}
		go func() {
			s.done <- run(ctx, append([]string{"orderly"}, args...), nil, strings.NewReader(""), &s.out, &s.out)
		}()
		return s
	}
	api := start("api", "--config", conf)
	worker := start("worker", "--config", conf, "--host", "schema-h1")
	servers := []*server{api, worker}
	defer func() {
		cancel()
		for _, s := range servers {
			<-s.done
		}
	}()
	waitUntil(t, 30*time.Second, "the API and the worker running", func() bool {
		return strings.Contains(api.out.String(), "api listening") && strings.Contains(worker.out.String(), "worker consuming")
	})

	_, pool := testenv.Store(t, dsn)
	latest, err := migrations.Latest()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(t.Context(), `INSERT INTO goose_db_version (version_id, is_applied) VALUES ($1, true)`, latest+1); err != nil {
		t.Fatal(err)
	}
	// Two checks of each server's after the insert: the first may have
	// read the version before it, the second began after the first ended.
	// Each server reads through its own store; api and worker are two.
	since := checked()
	running := func() {
		for _, s := range servers {
			select {
			case err := <-s.done:
				s.done <- err // for the deferred wait
				t.Fatalf("%s stopped on a newer schema: %v", s.name, err)
			default:
			}
		}
	}
	waitUntil(t, time.Minute, "two schema checks of each server on the newer schema", func() bool {
		running()
		now := checked()
		if len(now) < len(servers) {
			return false
		}
		for store, n := range now {
			if n-since[store] < 2 {
				return false
			}
		}
		return true
	})
	running()
	if _, err := pool.Exec(t.Context(), `DELETE FROM goose_db_version WHERE version_id = $1`, latest+1); err != nil {
		t.Fatal(err)
	}

	if out, err := runCmd(t, "migrate", "down", "--database-url", dsn); err != nil {
		t.Fatalf("migrate down: %v\n%s", err, out)
	}
	for _, s := range servers {
		select {
		case err := <-s.done:
			s.done <- err // for the deferred wait
			if err == nil || !strings.Contains(err.Error(), "rolled back under this running process") || !strings.Contains(err.Error(), "orderly migrate up") {
				t.Errorf("%s stopped with %v, want the rolled-back schema named", s.name, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s still runs on a schema rolled back under it:\n%s", s.name, s.out.String())
		}
	}
}

// TestSchemaRolledBackStopsAtTheFirstStatementThatFails: hF11's downgrade
// of a running fleet (main → a3d2396, `orderly migrate down` dropping
// 00025's orders.parent_run under it). Every submission to a newer API
// then failed 500 `internal` and every claim of a newer worker failed,
// its host's orders held, until the once-a-minute schema check stopped
// them (24 s to 84 s). A statement refused for a column or table that is
// gone now answers 503 `unavailable` (the order not recorded: the client
// retries) and makes the process read its schema at once, so it stops at
// its first such statement. The schema check's ticker is an hour here:
// only the failed statements can stop the servers.
func TestSchemaRolledBackStopsAtTheFirstStatementThatFails(t *testing.T) {
	leavesNoSubreaper(t) // its `orderly worker` runs in this process
	old := schemaCheck
	schemaCheck = time.Hour
	defer func() { schemaCheck = old }()
	dsn, natsURL := testenv.Postgres(t), testenv.NATS(t)
	token, sum := auth.NewToken()
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	conf := filepath.Join(dir, "orderly.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("listen: 127.0.0.1:0\ndatabase_url: %q\nnats:\n  url: %q\n"+
		"worker:\n  cgroup: \"off\"\nauth:\n  tokens:\n  - name: admin\n    sha256: %s\n    roles: [admin]\n",
		dsn, natsURL, sum)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, pool := testenv.Store(t, dsn)
	type server struct {
		name string
		out  testenv.LogBuffer
		done chan error
	}
	start := func(ctx context.Context, args ...string) *server {
		s := &server{name: args[0], done: make(chan error, 1)}
		go func() {
			s.done <- run(ctx, append([]string{"orderly"}, args...), nil, strings.NewReader(""), &s.out, &s.out)
		}()
		return s
	}
	apiURL := func(api *server) string {
		var base string
		waitUntil(t, 30*time.Second, "api listening", func() bool {
			for line := range strings.Lines(api.out.String()) {
				if strings.Contains(line, "api listening") {
					if i := strings.Index(line, "url="); i >= 0 {
						base = strings.Fields(line[i+len("url="):])[0]
					}
				}
			}
			return base != ""
		})
		return base
	}
	post := func(base, body string) (int, map[string]any, error) {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", base+"/v1/orders", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m, nil
	}
	submit := func(base, body string) (int, map[string]any) {
		t.Helper()
		code, m, err := post(base, body)
		if err != nil {
			t.Fatal(err)
		}
		return code, m
	}
	status := func(id string) string {
		var s string
		if err := pool.QueryRow(t.Context(), `SELECT status FROM orders WHERE id = $1`, id).Scan(&s); err != nil {
			t.Fatalf("order %s: %v", id, err)
		}
		return s
	}
	stopped := func(servers ...*server) {
		t.Helper()
		for _, s := range servers {
			select {
			case err := <-s.done:
				s.done <- err
				if err == nil || !strings.Contains(err.Error(), "rolled back under this running process") {
					t.Errorf("%s stopped with %v, want the rolled-back schema named", s.name, err)
				}
			case <-time.After(60 * time.Second):
				t.Fatalf("%s still runs a minute after its statements failed on a schema rolled back under it (its check is an hour away):\n%s", s.name, s.out.String())
			}
		}
	}
	migrate := func(dir string) {
		t.Helper()
		if dir == "down" {
			// Down to 24, one migration a run: 00028's maintenance log
			// and 00027's index and row policy, then 00026's
			// host_maintenance (the API's once-a-second read names it:
			// see below), then 00025's orders.parent_run.
			for {
				var v int64
				if err := pool.QueryRow(t.Context(), `SELECT max(version_id) FROM goose_db_version`).Scan(&v); err != nil {
					t.Fatal(err)
				}
				if v <= 24 {
					return
				}
				if out, err := runCmd(t, "migrate", "down", "--database-url", dsn); err != nil {
					t.Fatalf("migrate down from %d: %v\n%s", v, err, out)
				}
			}
		}
		if out, err := runCmd(t, "migrate", dir, "--database-url", dsn); err != nil {
			t.Fatalf("migrate %s: %v\n%s", dir, err, out)
		}
	}

	// A worker's claim: the order behind the one running when the
	// schema is rolled back.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	api := start(ctx, "api", "--config", conf)
	worker := start(ctx, "worker", "--config", conf, "--host", "schema-h2")
	defer func() {
		cancel()
		<-api.done
		<-worker.done
	}()
	base := apiURL(api)
	waitUntil(t, 30*time.Second, "worker consuming", func() bool { return strings.Contains(worker.out.String(), "worker consuming") })
	code, a := submit(base, fmt.Sprintf(`{"host":"schema-h2","command":"sh","args":["-c","while [ ! -e %s ]; do sleep 0.1; done"]}`, gate))
	if code != http.StatusAccepted {
		t.Fatalf("submit A: %d %v", code, a)
	}
	waitUntil(t, 30*time.Second, "A running", func() bool { return status(a["id"].(string)) == "running" })
	code, b := submit(base, `{"host":"schema-h2","command":"true"}`)
	if code != http.StatusAccepted {
		t.Fatalf("submit B: %d %v", code, b)
	}
	migrate("down")
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	stopped(worker, api)
	if s := status(b["id"].(string)); s != "queued" {
		t.Errorf("B is %s after the worker stopped on its claim, want it queued for the host's next worker", s)
	}

	// An API's submission.
	migrate("up")
	ctx2, cancel2 := context.WithCancel(t.Context())
	defer cancel2()
	api2 := start(ctx2, "api", "--config", conf)
	defer func() {
		cancel2()
		<-api2.done
	}()
	base = apiURL(api2)
	migrate("down")
	// Since 00026 the API reads host_maintenance every second
	// (intake.MaintenanceEvery), and 00026's down drops it: that read is
	// as much a statement on what is gone as the submission's insert, so
	// the API may have stopped before the submission reaches it. Either
	// answer keeps the contract (nothing recorded, no 500): a 503
	// `unavailable`, or no listener because the API already stopped on
	// the rollback, which stopped() checks it named.
	if code, m, err := post(base, `{"host":"schema-h2","command":"true"}`); err == nil {
		e, _ := m["error"].(map[string]any)
		if code != http.StatusServiceUnavailable || e["code"] != "unavailable" {
			t.Errorf("a submission on a schema rolled back under the API: %d %v, want 503 unavailable", code, m)
		}
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("a submission on a schema rolled back under the API: %v, want 503 unavailable or the API stopped", err)
	}
	stopped(api2)
	var n int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM orders`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("%d orders recorded, want A and B only: the submission on the rolled-back schema must record nothing", n)
	}
}
