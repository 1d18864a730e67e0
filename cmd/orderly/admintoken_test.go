package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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

// TestAdminTokenFileReadableByOthersIsRefused: serve's admin token file
// must be its user's alone, as its NATS seeds must. A copy restored
// without -p (cp under umask 022 makes it 0644) was taken as it was, so
// any local user, every order run on the machine as nobody included,
// could read a token that runs anything anywhere as anyone. serve now
// refuses to start on it, saying what to do, and does not store its
// hash; a file that holds no token a client could send is refused too
// (its hash would lock the admin token out).
func TestAdminTokenFileReadableByOthersIsRefused(t *testing.T) {
	store, _ := testenv.Store(t, testenv.Postgres(t))
	ctx := t.Context()
	dir := t.TempDir()
	path := filepath.Join(dir, "admin.token")
	tok, _ := auth.NewToken()
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	err := ensureAdminToken(ctx, store, path)
	if err == nil || !strings.Contains(err.Error(), "readable by others") || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a 0644 admin token file: %v, want a refusal saying chmod 600", err)
	}
	if toks, err := store.APITokens(ctx); err != nil || len(toks) != 0 {
		t.Fatalf("the refused file's token was stored: %v %v", toks, err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if err := ensureAdminToken(ctx, store, path); err == nil {
			t.Fatalf("an admin token file of mode %o was taken", mode)
		}
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ensureAdminToken(ctx, store, path); err != nil {
		t.Fatalf("the file made 0600: %v", err)
	}
	for _, bad := range []string{"", "\n", "two words\n"} {
		if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := ensureAdminToken(ctx, store, path); err == nil || !strings.Contains(err.Error(), "no token") {
			t.Fatalf("an admin token file holding %q: %v, want a refusal", bad, err)
		}
	}
}

// TestAdminTokenOnAFullDiskLeavesNoFile: serve's first start on a full
// disk could not write its admin token; os.WriteFile left the file empty,
// and every later start, with room again, refused it ("holds no token a
// client could send") until the operator deleted it. Now nothing is
// left, and the next start writes the token.
func TestAdminTokenOnAFullDiskLeavesNoFile(t *testing.T) {
	testenv.NeedRootTools(t, "filling a file system of its own", "a tmpfs mount for the data directory")
	store, _ := testenv.Store(t, testenv.Postgres(t))
	ctx := t.Context()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	fill := fillFileSystem(t, dir)
	path := filepath.Join(dir, "admin.token")
	if err := ensureAdminToken(ctx, store, path); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("admin token on a full disk: %v, want no space left", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("the failed write left %d files beside the filler, want none", len(ents)-1)
	}
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	if err := ensureAdminToken(ctx, store, path); err != nil {
		t.Fatalf("next start with room: %v", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("admin token mode %v, want 0600", st.Mode().Perm())
	}
}
