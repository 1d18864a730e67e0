package natsembed

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nats-io/nkeys"
)

// plantDir is a directory another local user (nobody) may write to, in
// a directory all may enter, for a test to plant files in as them.
func plantDir(t *testing.T) string {
	t.Helper()
	top, err := os.MkdirTemp("", "orderly-seeds-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	if err := os.Chmod(top, 0o777); err != nil {
		t.Fatal(err)
	}
	return top
}

// asNobody runs the shell script script as the user nobody in dir.
func asNobody(t *testing.T, dir, script string) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", "umask 077; "+script)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as nobody: %s: %v\n%s", script, err, out)
	}
}

// TestPlantedSeedIsNotAdopted: serve takes the seeds in its credentials
// dir as its roles' on the bus. It checked that a seed is 0600, not who
// made it: another user who could write the data dir before serve first
// ran there (its mode mended since) planted a seed of theirs, 0600 and
// theirs, as api.nk, and serve gave its public key the API's permissions;
// a credentials dir they made was chmodded 0700 and taken, theirs still;
// a symbolic link to a seed kept for another use was followed. Each is
// now refused, saying to delete it, and nothing is written in its place.
func TestPlantedSeedIsNotAdopted(t *testing.T) {
	if os.Geteuid() != 0 {
		// testenv.NeedRootTools, which this package cannot import.
		if os.Getenv("CI") == "true" {
			t.Fatal("planting files as another user needs root (the planter is nobody)")
		}
		t.Skip("planting files as another user needs root (the planter is nobody)")
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	elsewhere := filepath.Join(t.TempDir(), "kept.nk")
	if err := os.WriteFile(elsewhere, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		plant func(t *testing.T, top, dir string)
		says  string
	}{
		{"a seed of another user", func(t *testing.T, top, dir string) {
			if err := os.Mkdir(dir, 0o700); err != nil || os.Chmod(dir, 0o777) != nil {
				t.Fatal(err)
			}
			asNobody(t, dir, "printf '%s\\n' "+string(seed)+" > api.nk")
		}, "owned by uid 65534"},
		{"a credentials dir of another user", func(t *testing.T, top, dir string) {
			asNobody(t, top, "mkdir "+filepath.Base(dir)+" && cd "+filepath.Base(dir)+" && printf '%s\\n' "+string(seed)+" > api.nk")
		}, "owned by uid 65534"},
		{"a symbolic link to a seed", func(t *testing.T, top, dir string) {
			if err := os.Mkdir(dir, 0o700); err != nil || os.Chmod(dir, 0o777) != nil {
				t.Fatal(err)
			}
			asNobody(t, dir, "ln -s "+elsewhere+" api.nk")
		}, "symbolic link"},
	} {
		t.Run(c.name, func(t *testing.T) {
			top := plantDir(t)
			dir := filepath.Join(top, "creds")
			c.plant(t, top, dir)
			if err := os.Chmod(top, 0o755); err != nil { // the operator's mend
				t.Fatal(err)
			}
			creds, err := EnsureCredentials(dir, "h0", nil)
			if err == nil {
				for _, u := range creds.users {
					if u.Nkey == pub {
						t.Fatalf("the planted seed's key got a role on the bus")
					}
				}
			}
			if err == nil || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), "delete it") {
				t.Fatalf("%s planted: %v, want a refusal naming %q and saying to delete it", c.name, err, c.says)
			}
		})
	}
}

// TestPlantedOldKeyIsNotAccepted: the old key of a host whose seed is
// being rotated (RetiringFile) is accepted by the accounts config as
// that host's worker, as its seed is. It was read as any file: another
// user who could write the credentials dir before it was mended planted
// a public key of theirs there, or a link to one, and every later
// `nats-auth` gave that key the worker's permissions of the host (it
// only said on stderr that an old key was still accepted); a link left
// dangling had the rotation write the old key through it, wherever it
// pointed. The file is now held to the seeds' rule (secretfile): each
// is refused, saying to delete it, and nothing is written through it.
func TestPlantedOldKeyIsNotAccepted(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("planting files as another user needs root (the planter is nobody)")
		}
		t.Skip("planting files as another user needs root (the planter is nobody)")
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	elsewhere := filepath.Join(plantDir(t), "theirs.pub")
	if err := os.WriteFile(elsewhere, []byte(pub+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := RetiringFile("web-1")
	for _, c := range []struct {
		name, script, says string
	}{
		{"an old key of another user", "printf '%s\\n' " + pub + " > " + old, "owned by uid 65534"},
		{"a symbolic link to a key", "ln -s " + elsewhere + " " + old, "symbolic link"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(plantDir(t), "creds")
			if _, err := EnsureFleetCredentials(dir, []string{"web-1"}); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, 0o777); err != nil { // open, before the operator's mend
				t.Fatal(err)
			}
			asNobody(t, dir, c.script)
			creds, err := EnsureFleetCredentials(dir, []string{"web-1"})
			if err == nil && strings.Contains(creds.AccountsConfig(), pub) {
				t.Fatalf("the planted key is accepted as host web-1's worker:\n%s", creds.AccountsConfig())
			}
			if err == nil || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), "delete it") {
				t.Fatalf("%s planted: %v, want a refusal naming %q and saying to delete it", c.name, err, c.says)
			}
		})
	}

	t.Run("a dangling link where the rotation writes", func(t *testing.T) {
		dir := filepath.Join(plantDir(t), "creds")
		if _, err := EnsureFleetCredentials(dir, []string{"web-1"}); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(filepath.Dir(elsewhere), "written-through")
		asNobody(t, dir, "ln -s "+target+" "+old)
		err := RotateWorkerSeed(dir, "web-1")
		if _, serr := os.Lstat(target); serr == nil {
			t.Fatalf("the rotation wrote the old key through the planted link, to %s (err %v)", target, err)
		}
		if err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Fatalf("rotation over a planted link: %v, want a refusal naming the link", err)
		}
	})
}
