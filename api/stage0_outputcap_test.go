package api_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/testenv"
)

// TestStage0TruncationNamesTheWorkersCap: a run whose worker cut its
// output at the worker's own worker.max_output_bytes, lower than the
// API's, ends with stage0's truncation warning naming the worker's cap,
// which the worker records with the result (the finished event's
// output_cap). Before, the warning named the API's cap (10485760 bytes),
// which did not apply.
func TestStage0TruncationNamesTheWorkersCap(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"h1"}, maxOutput: 100})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Loud.md"),
		[]byte(stage0Runbook("Loud", "{}", "", `for i in $(seq 1 60); do echo "line $i of the loud runbook"; done`)), 0o644); err != nil {
		t.Fatal(err)
	}
	url, token := startStage0(t, e, dir)
	req, err := http.NewRequestWithContext(testenv.Context(t), http.MethodPost, url+"/api/runbooks/Loud.md/execute", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(b)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `[WARNING: Output truncated due to size limit (100 bytes)]`) ||
		strings.Contains(body, "line 60 of") {
		t.Errorf("a run cut by its worker's 100-byte cap: %d\n%s\nwant the warning naming 100 bytes", resp.StatusCode, body)
	}
}
