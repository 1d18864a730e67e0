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

// TestCLITakesNoImplicitTokenFileByLink: ./data/admin.token in a
// directory another user controls (/tmp/data) may be their symbolic or
// hard link to a one-line file of the reader's (a git credential, a
// pgpass line, another API's token): the file is the reader's own, so the
// owner check took it, and its line went as the bearer token to the
// default URL, 127.0.0.1:8080, which that user may listen on. A link is
// refused there; a named data dir is still taken as named.
func TestCLITakesNoImplicitTokenFileByLink(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root to give a directory to another user")
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
	// The reader's own one-line secret, outside the data dir.
	secret := filepath.Join(dir, "credentials")
	if err := os.WriteFile(secret, []byte("https://me:ghp_readers_own@example.com\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(dir, "shared")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(work)
	if err := os.Mkdir("data", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown("data", 65534, 65534); err != nil { // the planter's
		t.Fatal(err)
	}
	file := filepath.Join("data", "admin.token")
	env := []string{"ORDERLY_URL=" + srv.URL}
	for _, link := range []struct {
		kind string
		make func(old, new string) error
	}{{"symlink", os.Symlink}, {"hard link", os.Link}} {
		_ = os.Remove(file)
		if err := link.make(secret, file); err != nil {
			t.Fatal(err)
		}
		r := cli(t, env, "", "ls")
		wantExit(t, r, 1)
		if r.err == nil || !strings.Contains(r.err.Error(), "link") {
			t.Errorf("ls with ./data/admin.token a %s to the reader's file: %v, want a refusal naming the link", link.kind, r.err)
		}
		mu.Lock()
		if len(seen) != 0 {
			t.Errorf("%s: requests sent with the reader's linked file as the token: %q", link.kind, seen)
		}
		seen = nil
		mu.Unlock()
	}
	// Named, the link is the operator's choice.
	r := cli(t, append(env, "ORDERLY_DATA_DIR=data"), "", "ls")
	wantExit(t, r, 0)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0] != "Bearer https://me:ghp_readers_own@example.com" {
		t.Errorf("want one request with the named data dir's token, got %q", seen)
	}
}
