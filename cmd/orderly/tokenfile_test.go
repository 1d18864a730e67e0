package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestCLITakesOnlyItsOwnImplicitTokenFile: with no token and no data dir
// named, the CLI reads ./data/admin.token, so in /tmp (or another user's
// directory) it took whatever token another user put there and sent every
// request, with the order's command and its output, under that user's
// principal. That file is now refused unless it is the reader's own (or
// root's); a data dir the reader names is taken as named.
func TestCLITakesOnlyItsOwnImplicitTokenFile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another user")
	}
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"orders":[],"next_cursor":null}`))
	}))
	defer srv.Close()
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.Mkdir("data", 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join("data", "admin.token")
	if err := os.WriteFile(file, []byte("ord_planted\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(file, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	env := []string{"ORDERLY_URL=" + srv.URL}
	r := cli(t, env, "", "ls")
	wantExit(t, r, 1)
	if r.err == nil || !strings.Contains(r.err.Error(), "owned by uid 65534") {
		t.Errorf("ls with another user's ./data/admin.token: %v, want a refusal naming its owner", r.err)
	}
	mu.Lock()
	if len(seen) != 0 {
		t.Errorf("requests sent with another user's token: %q", seen)
	}
	mu.Unlock()

	// Named, it is the operator's choice (root reading the serve user's
	// /var/lib/orderly/admin.token).
	for _, env := range [][]string{append(env, "ORDERLY_DATA_DIR=data"), env} {
		args := []string{"ls"}
		if len(env) == 1 {
			args = append(args, "--data-dir", "data")
		}
		r = cli(t, env, "", args...)
		wantExit(t, r, 0)
	}
	// The reader's own file, unnamed.
	if err := os.Chown(file, os.Geteuid(), os.Getegid()); err != nil {
		t.Fatal(err)
	}
	r = cli(t, env, "", "ls")
	wantExit(t, r, 0)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 3 || seen[0] != "Bearer ord_planted" {
		t.Errorf("want three requests with the named or own token, got %q", seen)
	}
}
