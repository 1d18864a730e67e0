package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/testenv"
)

// TestReadyzWarnsWhilePostgresIsOutOfDisk: PostgreSQL out of disk refuses
// every submission (SQLSTATE 53100) and answers reads, and /readyz said
// `postgres: ok` with nothing else, so nothing but the 503s and the log
// told an operator looking at the service what was wrong. The replica
// stays ready (reads work; decisions.md, second round) and `warnings`
// names the refusal (without PostgreSQL's message: its file path is for
// the log, not an anonymous probe); the submission's 503 says the disk
// is full. A
// trigger raises disk_full, as a table that cannot grow does.
func TestReadyzWarnsWhilePostgresIsOutOfDisk(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	ctx := testenv.Context(t)
	if code, r := e.readyz(); code != http.StatusOK || r.Warnings != nil {
		t.Fatalf("readyz before the disk filled: %d %+v", code, r)
	}
	if _, err := e.pool.Exec(ctx, `CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			RAISE EXCEPTION 'could not extend file "base/1/2": No space left on device' USING ERRCODE = 'disk_full';
		END $$;
		CREATE TRIGGER disk_full BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION disk_full()`); err != nil {
		t.Fatal(err)
	}
	code, b := e.do("alice", "POST", "/v1/orders", map[string]any{"host": "h-full", "command": "true"})
	if code != http.StatusServiceUnavailable || !strings.Contains(string(b), `"unavailable"`) || !strings.Contains(string(b), "out of disk space") {
		t.Fatalf("submission while PostgreSQL is out of disk: %d %s, want 503 unavailable naming the disk", code, b)
	}
	code, r := e.readyz()
	if code != http.StatusOK || r.Status != "ready" || r.Checks["postgres"] != "ok" {
		t.Errorf("readyz while PostgreSQL refuses writes for disk: %d %+v, want 200 ready (reads work)", code, r)
	}
	// /readyz answers an unauthenticated caller: the stable SQLSTATE and
	// a generic text, never PostgreSQL's message, which names the data
	// file that could not grow (hB14; the log has it).
	if w := r.Warnings["postgres"]; !strings.Contains(w, "53100") || !strings.Contains(w, "disk space") ||
		strings.Contains(w, "base/1/2") || strings.Contains(w, "could not extend") {
		t.Errorf("readyz's warnings while PostgreSQL refuses writes for disk: %+v, want postgres's refusal without its file path", r.Warnings)
	}
}
