package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/secretfile"
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
	fill := testenv.FillDisk(t, dir)
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

// asNobody runs the shell script script as the user nobody in dir (a
// local user other than serve's), and fails the test when it fails.
func asNobody(t *testing.T, dir, script string) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", "umask 077; "+script)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as nobody: %s: %v\n%s", script, err, out)
	}
}

// TestAdminTokenPlantedIsNotAdopted: serve takes the admin.token it finds
// in its data dir as admin's. It checked that the data dir is its user's
// and that nobody else writes to it now, and that the file is 0600, not
// who made the file or what it is: a token another user planted while the
// data dir was theirs to write (0777 before an operator's chmod 755, made
// under a umask of 000), 0600 and theirs, became admin's; so did a
// symbolic link they planted to a one-line file of serve's user kept for
// another use, or a hard link to one; and a FIFO they planted kept serve
// from starting for good (os.ReadFile blocked on it). serve now takes
// only a regular file of its own user, with one name, reached without a
// link, and says to delete anything else; nothing goes to api_tokens.
func TestAdminTokenPlantedIsNotAdopted(t *testing.T) {
	testenv.NeedRootTools(t, "planting files as another user", "run as root; the planter is nobody", "/bin/sh")
	store, _ := testenv.Store(t, testenv.Postgres(t))
	ctx := t.Context()
	planted, _ := auth.NewToken()
	// A one-line file of serve's user (root), 0600, whose line the planter
	// knows: a token of theirs that an operator keeps for them, say.
	known := filepath.Join(serveDataDir(t, "orderly-known-"), "their.token")
	if err := os.WriteFile(known, []byte(planted+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		plant func(t *testing.T, dir string)
		says  string
	}{
		{"a file of another user", func(t *testing.T, dir string) {
			asNobody(t, dir, "printf '%s\\n' "+planted+" > admin.token")
		}, "owned by uid 65534"},
		{"a symbolic link", func(t *testing.T, dir string) {
			asNobody(t, dir, "ln -s "+known+" admin.token")
		}, "symbolic link"},
		{"a hard link", func(t *testing.T, dir string) {
			if err := os.Link(known, filepath.Join(dir, "admin.token")); err != nil {
				t.Fatal(err)
			}
		}, "2 names"},
		{"a FIFO", func(t *testing.T, dir string) {
			asNobody(t, dir, "mkfifo admin.token")
		}, "not a regular file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := serveDataDir(t, "orderly-planted-")
			if err := os.Chmod(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			c.plant(t, dir)
			if err := os.Chmod(dir, 0o755); err != nil { // the operator's mend
				t.Fatal(err)
			}
			if err := dataDirOwn(dir); err != nil {
				t.Fatalf("the mended data dir: %v", err)
			}
			path := filepath.Join(dir, "admin.token")
			done := make(chan error, 1)
			go func() { done <- ensureAdminToken(ctx, store, path) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(time.Minute):
				// Unblock the read that waits for a writer.
				if f, ferr := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); ferr == nil {
					_, _ = f.WriteString(planted + "\n")
					f.Close()
				}
				err = <-done
				t.Errorf("serve's start blocked on the planted %s for a minute", c.name)
			}
			if err == nil || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), "delete it") {
				t.Errorf("a planted %s: %v, want a refusal naming %q and saying to delete it", c.name, err, c.says)
			}
			toks, lerr := store.APITokens(ctx)
			if lerr != nil {
				t.Fatal(lerr)
			}
			for _, tok := range toks {
				if tok.SHA256 == auth.HashToken(planted) {
					t.Fatalf("the planter's token is %s's in api_tokens", tok.Name)
				}
			}
			if len(toks) != 0 {
				t.Errorf("api_tokens after the refusal: %v", toks)
			}
		})
	}
}

// TestServeFollowsNoPlantedLinkInItsDataDir: besides the admin token,
// serve writes two files of fixed names in its data dir as it starts, as
// root when it runs as root: api.instance through api.instance.tmp, opened
// with O_TRUNC, and serve.lock, opened with O_CREATE. Another user who
// could write the data dir before serve first ran there (its mode mended
// since) planted both as symbolic links: serve truncated the file the
// first named (/etc/shadow, say) and wrote its instance id in it, and
// created the file the second named (/etc/nologin, which locks every
// other user out). A planted api.instance, a FIFO, kept serve from
// starting (its read blocked). Now the temporary file is made anew,
// never through a link, the lock is opened without following one, and
// api.instance is read only as the regular file serve wrote.
func TestServeFollowsNoPlantedLinkInItsDataDir(t *testing.T) {
	testenv.NeedRootTools(t, "planting files as another user", "run as root; the planter is nobody", "/bin/sh")
	store, _ := testenv.Store(t, testenv.Postgres(t))
	victims := serveDataDir(t, "orderly-victims-")
	precious := filepath.Join(victims, "shadow")
	if err := os.WriteFile(precious, []byte("root's own\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	created := filepath.Join(victims, "nologin")

	dir := serveDataDir(t, "orderly-planted-")
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	asNobody(t, dir, "ln -s "+precious+" api.instance.tmp && ln -s "+created+" serve.lock")
	if err := os.Chmod(dir, 0o755); err != nil { // the operator's mend
		t.Fatal(err)
	}
	unlock, err := lockDataDir(dir)
	if err == nil {
		unlock()
	}
	if _, serr := os.Lstat(created); serr == nil {
		t.Errorf("serve's lock created the file its planted link names")
	}
	if err == nil || !strings.Contains(err.Error(), "symbolic link") || !strings.Contains(err.Error(), "delete it") {
		t.Errorf("a planted serve.lock link: %v, want a refusal saying to delete it", err)
	}
	if _, err := takeOverPresence(t.Context(), store, dir, testLogger(t)); err != nil {
		t.Fatalf("api.instance beside a planted api.instance.tmp link: %v", err)
	}
	if b, _ := os.ReadFile(precious); string(b) != "root's own\n" {
		t.Errorf("serve wrote through the planted api.instance.tmp link: the file it names holds %q", b)
	}
	if b, err := secretfile.Read(filepath.Join(dir, presenceFile)); err != nil || len(bytes.TrimSpace(b)) != 36 {
		t.Errorf("api.instance after the start: %q %v, want serve's instance id in a file of its own", b, err)
	}

	// A planted api.instance: a FIFO, a file of another user.
	for _, c := range []struct{ name, plant, says string }{
		{"a FIFO", "mkfifo " + presenceFile, "not a regular file"},
		{"a file of another user", "echo " + uuid.NewString() + " > " + presenceFile, "owned by uid 65534"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := serveDataDir(t, "orderly-planted-")
			if err := os.Chmod(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			asNobody(t, dir, c.plant)
			if err := os.Chmod(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := takeOverPresence(t.Context(), store, dir, testLogger(t))
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(time.Minute):
				if f, ferr := os.OpenFile(filepath.Join(dir, presenceFile), os.O_WRONLY|syscall.O_NONBLOCK, 0); ferr == nil {
					_, _ = f.WriteString(uuid.NewString() + "\n")
					f.Close()
				}
				err = <-done
				t.Errorf("serve's start blocked on the planted %s for a minute", c.name)
			}
			if err == nil || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), "delete it") {
				t.Errorf("a planted %s as api.instance: %v, want a refusal naming %q and saying to delete it", c.name, err, c.says)
			}
		})
	}
}

// TestServeRefusesEntriesAnotherUserPutInItsDataDir: dataDirOwn checks
// the data dir as it is now. Another user who could write it before (it
// was 0777, an operator's chmod 755 since) put directories there that
// stay theirs: nats, where serve's embedded NATS keeps its JetStream
// store (their store, which they may rewrite under the running bus), and
// pg, the managed cluster's directory (a cluster of their making, whose
// postgresql.conf runs its commands as postgres). serve took both. It
// now refuses to start on such a data dir, naming the entry, before it
// starts anything.
func TestServeRefusesEntriesAnotherUserPutInItsDataDir(t *testing.T) {
	testenv.NeedRootTools(t, "planting files as another user", "run as root; the planter is nobody", "/bin/sh")
	for _, entry := range []string{"nats", "pg"} {
		t.Run(entry, func(t *testing.T) {
			dataDir := serveDataDir(t, "orderly-planted-")
			if err := os.Chmod(dataDir, 0o777); err != nil {
				t.Fatal(err)
			}
			asNobody(t, dataDir, "mkdir -m 755 "+entry)
			if err := os.Chmod(dataDir, 0o755); err != nil { // the operator's mend
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			var out bytes.Buffer
			err := run(ctx, []string{"orderly", "serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--host", "srv"},
				[]string{"ORDERLY_NATS__LISTEN=127.0.0.1:0"}, strings.NewReader(""), &out, &out)
			if err == nil || !strings.Contains(err.Error(), "holds "+entry+", owned by uid 65534") || !strings.Contains(err.Error(), "delete it") {
				t.Fatalf("serve on a data dir with nobody's %s: %v, want a refusal naming it\n%s", entry, err, out.String())
			}
			if entries, _ := os.ReadDir(dataDir); len(entries) != 1 {
				t.Errorf("serve started something before refusing the data dir: %v", entries)
			}
		})
	}
}

// TestServeRefusesADataDirBelowAnotherUsersDirectory: dataDirOwn checked
// the data dir and serve's checks what is in it, but not the directories
// above it: one that another user owns, or may write to without the
// sticky bit, lets them rename serve's data dir away after those checks
// (nobody does it here) and put one of theirs in its place, whose nats
// store and pg cluster serve then runs on. Such a data dir is refused,
// naming the directory; one below sticky /tmp, as every test's is, passes.
func TestServeRefusesADataDirBelowAnotherUsersDirectory(t *testing.T) {
	for _, c := range []struct {
		name  string
		mode  os.FileMode
		owner int
		says  string
	}{
		{"another user's", 0o755, 65534, "owned by uid 65534"},
		{"world-writable", 0o777, 0, "not sticky"},
		{"group-writable", 0o775, 0, "not sticky"},
		{"sticky and world-writable", 0o777 | os.ModeSticky, 0, ""},
		{"root's", 0o755, 0, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			parent := serveDataDir(t, "orderly-parent-")
			dir := filepath.Join(parent, "data")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(parent, c.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(parent, c.owner, c.owner); err != nil {
				t.Fatal(err)
			}
			err := dataDirOwn(dir)
			if c.says == "" {
				if err != nil {
					t.Fatalf("a data dir in a directory that is %s: %v", c.name, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), parent) {
				t.Fatalf("a data dir in a directory that is %s: %v, want a refusal naming %s and %q", c.name, err, parent, c.says)
			}
			if c.owner == 65534 {
				// What the refusal is for: its owner puts a data dir of
				// theirs where serve's was.
				asNobody(t, parent, "mv data data.serves && mkdir data nats && mv nats data/")
			}
		})
	}
}
