package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestAdminTokenFileWinsOverARestoredHash: serve's admin token is rotated
// by removing its file. A database restored from a backup taken before the
// rotation holds the old hash; serve kept it (the insert did nothing on a
// name already there), so the file's token was refused and the token
// rotated away, perhaps because it leaked, worked again. At start the
// database now takes the file's hash.
func TestAdminTokenFileWinsOverARestoredHash(t *testing.T) {
	store, pool := testenv.Store(t, testenv.Postgres(t))
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "admin.token")
	stored := func() string {
		toks, err := store.APITokens(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, tok := range toks {
			if tok.Name == "admin" {
				return tok.SHA256
			}
		}
		return ""
	}
	if err := ensureAdminToken(ctx, store, path); err != nil {
		t.Fatal(err)
	}
	backup := stored() // the hash a backup taken now holds

	// Rotation: the file removed, serve started again.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := ensureAdminToken(ctx, store, path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	current := auth.HashToken(strings.TrimSpace(string(b)))
	if stored() != current || current == backup {
		t.Fatal("the rotation did not store the new token's hash")
	}

	// The restore puts the old hash back; serve starts on it.
	if _, err := pool.Exec(ctx, `UPDATE api_tokens SET sha256 = $1 WHERE name = 'admin'`, backup); err != nil {
		t.Fatal(err)
	}
	if err := ensureAdminToken(ctx, store, path); err != nil {
		t.Fatal(err)
	}
	if stored() != current {
		t.Fatal("after the restore the database keeps the hash rotated away: the file's token is refused and the old one works")
	}
}
