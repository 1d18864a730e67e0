package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeBoundsItsMemory: serve applies memory_limit_bytes as the Go
// runtime's memory limit at start and again on reload, as its own /metrics
// report it (go_gc_gomemlimit_bytes).
func TestServeBoundsItsMemory(t *testing.T) {
	dataDir := serveDataDir(t, "orderly-mem-")
	cfg := filepath.Join(dataDir, "orderly.yaml")
	write := func(limit int64) {
		if err := os.WriteFile(cfg, fmt.Appendf(nil, "memory_limit_bytes: %d\n", limit), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(64 << 20)
	p := startServe(t, dataDir, "--config", cfg)
	tok, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tok))
	limit := func() string {
		code, b := serveCall(t, p.url, token, http.MethodGet, "/metrics", nil)
		if code != http.StatusOK {
			t.Fatalf("/metrics = %d", code)
		}
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "go_gc_gomemlimit_bytes "); ok {
				return strings.TrimSpace(v)
			}
		}
		t.Fatal("/metrics has no go_gc_gomemlimit_bytes")
		return ""
	}
	if got := limit(); got != "6.7108864e+07" {
		t.Fatalf("memory limit %s; want 64 MiB from the config", got)
	}
	write(0)
	if code, b := serveCall(t, p.url, token, http.MethodPost, "/v1/admin/reload", nil); code != http.StatusOK {
		t.Fatalf("reload = %d %s", code, b)
	}
	if got := limit(); got != "9.223372036854776e+18" {
		t.Fatalf("memory limit %s after a reload to 0; want none (math.MaxInt64)", got)
	}
}
