package hostpolicy

import (
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/orderly-run/orderly/internal/order"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		// CI runs as root: there a skip would hide lost coverage.
		if os.Getenv("CI") == "true" {
			t.Fatal("the worker's credential switch needs root, and CI=true runs as root")
		}
		t.Skip("the worker's credential switch needs root; run the tests as root to cover it")
	}
}

func TestRunAsRoot(t *testing.T) {
	needRoot(t)
	t.Parallel()
	f := newFixture(t)
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("this host has no user nobody: %v", err)
	}
	nobodyUID, _ := strconv.ParseUint(nobody.Uid, 10, 32)
	ok := order.Code("")
	tests := []struct {
		name        string
		defaultUser string
		allowed     []string
		runAs       string
		code        order.Code
		wantUser    string
		switches    bool
	}{
		{"default is the worker's own user", "", nil, "", ok, "root", false},
		{"own user by name when it is the default", "", nil, "root", ok, "root", false},
		{"own user by uid when it is the default", "", nil, "0", ok, "root", false},
		{"default user", "nobody", nil, "", ok, "nobody", true},
		{"default user by name", "nobody", nil, "nobody", ok, "nobody", true},
		{"allowed user", "", []string{"nobody"}, "nobody", ok, "nobody", true},
		{"allowed user by uid", "", []string{"nobody"}, nobody.Uid, ok, "nobody", true},
		{"allowed uid by name", "", []string{nobody.Uid}, "nobody", ok, "nobody", true},
		{"not allowed: empty list denies others", "", nil, "nobody", order.CodeForbidden, "", false},
		{"not allowed: not listed", "", []string{"daemon"}, "nobody", order.CodeForbidden, "", false},
		// A root worker told to run as nobody by default must not run as
		// root on request just because it is root.
		{"own user not implicitly allowed", "nobody", nil, "root", order.CodeForbidden, "", false},
		{"own user not implicitly allowed by uid", "nobody", []string{"daemon"}, "0", order.CodeForbidden, "", false},
		{"unknown allowed user", "", []string{"orderly-no-such-user"}, "orderly-no-such-user", order.CodeUnprocessable, "", false},
		{"unknown user not allowed", "", nil, "orderly-no-such-user", order.CodeForbidden, "", false},
		{"unknown default user", "orderly-no-such-user", nil, "", order.CodeUnprocessable, "", false},
		{"invalid name", "", []string{"Bad User"}, "Bad User", order.CodeInvalid, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := f.cfg()
			cfg.DefaultUser, cfg.AllowedUsers = tt.defaultUser, tt.allowed
			prep, err := newPolicy(t, cfg).Prepare(&order.Order{Command: "ls", RunAs: tt.runAs})
			assertCode(t, err, tt.code)
			if err != nil {
				return
			}
			if prep.User != tt.wantUser {
				t.Errorf("User = %q, want %q", prep.User, tt.wantUser)
			}
			cred := prep.Req.Credential
			if !tt.switches {
				if cred != nil {
					t.Errorf("Credential = %+v, want none", cred)
				}
				return
			}
			if cred == nil || cred.Uid != uint32(nobodyUID) {
				t.Fatalf("Credential = %+v, want uid %d", cred, nobodyUID)
			}
			if prep.Req.Dir != "/" || !slices.Contains(prep.Req.Env, "HOME=/") || !slices.Contains(prep.Req.Env, "USER=nobody") {
				t.Errorf("nobody's home does not exist, want / for HOME and Dir: Dir %q, Env %q", prep.Req.Dir, prep.Req.Env)
			}
		})
	}
}

func TestCredentialGroups(t *testing.T) {
	needRoot(t)
	t.Parallel()
	for _, name := range []string{"nobody", "postgres", "daemon"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		t.Run(name, func(t *testing.T) {
			cred, err := credential(u)
			if err != nil {
				t.Fatal(err)
			}
			ids, err := u.GroupIds()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, g := range cred.Groups {
				got = append(got, strconv.FormatUint(uint64(g), 10))
			}
			if !slices.Equal(got, ids) || strconv.FormatUint(uint64(cred.Gid), 10) != u.Gid {
				t.Errorf("Gid %d Groups %v, want %s %v", cred.Gid, got, u.Gid, ids)
			}
		})
	}
}

// asUnprivileged makes p behave as a worker running as nobody.
func asUnprivileged(t *testing.T, p *Policy) {
	t.Helper()
	self, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("this host has no user nobody: %v", err)
	}
	p.self = self
	p.euid, _ = strconv.Atoi(self.Uid)
}

func TestRunAsUnprivileged(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	sudoDir := t.TempDir()
	sf := fixture{root: sudoDir}
	sf.file(t, "sudo", 0o755)

	t.Run("own user needs no switch", func(t *testing.T) {
		p := newPolicy(t, f.cfg())
		asUnprivileged(t, p)
		prep, err := p.Prepare(&order.Order{Command: "ls"})
		assertCode(t, err, "")
		if prep.User != "nobody" || prep.Req.Credential != nil || prep.Req.Path != f.path("usr/bin/ls") {
			t.Errorf("User %q Credential %+v Path %s", prep.User, prep.Req.Credential, prep.Req.Path)
		}
	})
	t.Run("other user without sudo is refused", func(t *testing.T) {
		cfg := f.cfg()
		cfg.AllowedUsers = []string{"root"}
		p := newPolicy(t, cfg)
		asUnprivileged(t, p)
		_, err := p.Prepare(&order.Order{Command: "ls", RunAs: "root"})
		assertCode(t, err, order.CodeUnprocessable, "use_sudo")
	})
	t.Run("sudo", func(t *testing.T) {
		cfg := f.cfg()
		cfg.AllowedUsers = []string{"root"}
		cfg.UseSudo = true
		cfg.CommandPath = append(cfg.CommandPath, sudoDir)
		p := newPolicy(t, cfg)
		asUnprivileged(t, p)
		prep, err := p.Prepare(&order.Order{Command: "shutdown", Args: []string{"-h", "--", "now"}, RunAs: "root"})
		assertCode(t, err, "")
		want := []string{"sudo", "-n", "-u", "root", "--", f.path("usr/sbin/shutdown"), "-h", "--", "now"}
		if prep.Req.Path != sf.path("sudo") || !slices.Equal(prep.Req.Argv, want) || prep.Req.Credential != nil {
			t.Errorf("Path %s Argv %q Credential %+v, want %s %q none", prep.Req.Path, prep.Req.Argv, prep.Req.Credential, sf.path("sudo"), want)
		}
		if !slices.Contains(prep.Req.Env, "USER=root") {
			t.Errorf("Env %q is not root's", prep.Req.Env)
		}
	})
	t.Run("sudo with env is refused", func(t *testing.T) {
		cfg := f.cfg()
		cfg.AllowedUsers = []string{"root"}
		cfg.UseSudo = true
		cfg.CommandPath = append(cfg.CommandPath, sudoDir)
		p := newPolicy(t, cfg)
		asUnprivileged(t, p)
		// sudo's env_reset would drop GREETING, and the order would run
		// without it.
		_, err := p.Prepare(&order.Order{Command: "ls", RunAs: "root", Env: map[string]string{"GREETING": "hello"}})
		assertCode(t, err, order.CodeUnprocessable, "sudo resets the environment")
		// Its own user needs no sudo, and gets the variable.
		prep, err := p.Prepare(&order.Order{Command: "ls", Env: map[string]string{"GREETING": "hello"}})
		assertCode(t, err, "")
		if !slices.Contains(prep.Req.Env, "GREETING=hello") {
			t.Errorf("Env %q lacks the order's variable", prep.Req.Env)
		}
	})
	t.Run("another default user is refused at load", func(t *testing.T) {
		for _, c := range []struct {
			defaultUser string
			sudo        bool
			refused     bool
		}{{"root", false, true}, {"0", false, true}, {"root", true, false}, {"nobody", false, false}, {"", false, false}, {"orderly-no-such-user", false, false}} {
			cfg := f.cfg()
			cfg.DefaultUser, cfg.UseSudo = c.defaultUser, c.sudo
			p := newPolicy(t, cfg)
			asUnprivileged(t, p)
			err := p.checkDefaultUser()
			if (err != nil) != c.refused || err != nil && !strings.Contains(err.Error(), "cannot switch users") {
				t.Errorf("default_user %q, use_sudo %v: %v, want refused %v", c.defaultUser, c.sudo, err, c.refused)
			}
		}
	})
	t.Run("sudo not in command_path", func(t *testing.T) {
		cfg := f.cfg()
		cfg.AllowedUsers = []string{"root"}
		cfg.UseSudo = true
		p := newPolicy(t, cfg)
		asUnprivileged(t, p)
		_, err := p.Prepare(&order.Order{Command: "ls", RunAs: "root"})
		assertCode(t, err, order.CodeUnprocessable, "sudo")
	})
}

// lookupFailsEnv makes TestRunAsWhenTheUserCannotBeLookedUp do its check
// in the process it is set in (a fresh one).
const lookupFailsEnv = "ORDERLY_HOSTPOLICY_LOOKUP_FAILS"

// TestRunAsWhenTheUserCannotBeLookedUp: a worker out of file descriptors
// cannot read the user database; an order naming an allowed user that
// exists is then unavailable (the worker records it failed, the host's
// trouble), not refused as "user does not exist on this host"
// (unprocessable, recorded rejected). The check runs in a fresh test
// process: the descriptors are the whole process's, and the C library,
// once an earlier test had it list a user's groups, answered the lookup
// from what it keeps open.
func TestRunAsWhenTheUserCannotBeLookedUp(t *testing.T) {
	if os.Getenv(lookupFailsEnv) != "1" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRunAsWhenTheUserCannotBeLookedUp$", "-test.count=1")
		cmd.Env = append(os.Environ(), lookupFailsEnv+"=1")
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "PASS") {
			t.Fatalf("the check in a fresh process: %v\n%s", err, out)
		}
		return
	}
	cfg := newFixture(t).cfg()
	cfg.AllowedUsers = []string{"nobody"}
	p := newPolicy(t, cfg)
	var was syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &was); err != nil {
		t.Fatal(err)
	}
	open, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	lower := was
	lower.Cur = uint64(len(open) + 16)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lower); err != nil {
		t.Fatal(err)
	}
	var held []*os.File
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		held = append(held, f)
	}
	_, err = p.Prepare(&order.Order{Command: "ls", RunAs: "nobody"})
	for _, f := range held {
		f.Close()
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &was); err != nil {
		t.Fatal(err)
	}
	assertCode(t, err, order.CodeUnavailable)
	if err == nil || !strings.Contains(err.Error(), `could not look up user "nobody" on this host`) ||
		!strings.Contains(err.Error(), "too many open files") {
		t.Fatalf("Prepare out of descriptors: %v; want the lookup's failure", err)
	}
	if _, err := p.Prepare(&order.Order{Command: "ls", RunAs: "nobody"}); err != nil {
		t.Fatalf("Prepare with descriptors again: %v", err)
	}
}
