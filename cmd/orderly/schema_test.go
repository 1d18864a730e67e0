package main

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/migrations"
)

// TestSchemaRolledBackStopsServers: `orderly api` and `orderly worker`
// check the schema at start, and again while they run. A newer schema
// (a rolling upgrade migrates before it replaces the processes) leaves
// them running; one rolled back below their binary's with `orderly
// migrate down` stops them, non-zero and saying why: the rollback
// removed what their statements count on (00011's trigger, without which
// a finished order kept its env values).
func TestSchemaRolledBackStopsServers(t *testing.T) {
	dsn := testenv.Postgres(t)
	token := startupAdminToken(t, dsn)
	dir := startupDir(t, "osr-")
	ns := newNATSServer(t, dir, "")
	ns.start()
	conf := writeStartupConfig(t, dir, dsn, ns.url())
	apiProc, workerProc, listen := startAPIAndWorker(t, dir, conf)
	waitServing(t, listen, token, apiProc, workerProc, time.Minute)

	_, pool := testenv.Store(t, dsn)
	latest, err := migrations.Latest()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(t.Context(), `INSERT INTO goose_db_version (version_id, is_applied) VALUES ($1, true)`, latest+1); err != nil {
		t.Fatal(err)
	}
	// One check and some: a process that stops exits within this.
	if apiProc.waitExit(schemaCheck + 2*time.Second) {
		t.Fatalf("the API stopped on a newer schema:\n%s", logTail(apiProc.log, 10))
	}
	if !workerProc.alive() {
		t.Fatalf("the worker stopped on a newer schema:\n%s", logTail(workerProc.log, 10))
	}
	if _, err := pool.Exec(t.Context(), `DELETE FROM goose_db_version WHERE version_id = $1`, latest+1); err != nil {
		t.Fatal(err)
	}

	out, err := exec.Command(orderlyBin, "migrate", "down", "--database-url", dsn).CombinedOutput()
	if err != nil {
		t.Fatalf("migrate down: %v\n%s", err, out)
	}
	for _, p := range []*faultProc{apiProc, workerProc} {
		if !p.waitExit(schemaCheck + 10*time.Second) {
			t.Fatalf("%s still runs on a schema rolled back under it:\n%s", p.name, logTail(p.log, 10))
		}
		if code := p.cmd.ProcessState.ExitCode(); code == 0 {
			t.Errorf("%s exited 0", p.name)
		}
		if log := readLog(p); !strings.Contains(log, "rolled back under this running process") || !strings.Contains(log, "orderly migrate up") {
			t.Errorf("%s does not say why it stopped:\n%s", p.name, logTail(p.log, 10))
		}
	}
}
