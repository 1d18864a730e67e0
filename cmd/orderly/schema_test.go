package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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
