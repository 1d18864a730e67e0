package testenv

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// PgBouncer is a pgbouncer process in transaction mode in front of a
// PostgreSQL server, as docs/scaling.md puts it between a fleet's
// workers and PostgreSQL: every client's transaction goes to whichever
// of its few server connections is free, so nothing a session keeps
// outlives a transaction. The test can kill it and start it again on
// its port, its clients' connections cut.
type PgBouncer struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

// PgBouncerBinary is the pgbouncer to run: on PATH, in /usr/sbin (where
// Debian's package puts it, off a test's PATH) or in the repository's
// bin/. Missing, it fails t under CI=true (scripts/ensure-pgbouncer.sh
// installs it) and skips it elsewhere.
func PgBouncerBinary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/pgbouncer", repoBin("pgbouncer")} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("pgbouncer not found on PATH, in /usr/sbin or in bin/: run scripts/ensure-pgbouncer.sh")
	}
	t.Skip("pgbouncer not found: run scripts/ensure-pgbouncer.sh")
	return ""
}

// repoBin is name in the repository's bin/, found from the test's
// working directory (its package's) upwards.
func repoBin(name string) string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "bin", name)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// StartPgBouncer runs pgbouncer in transaction mode with poolSize server
// connections per database and user in front of dsn's server (a DSN of
// Postgres or of a pgembed server: its unix socket), on a loopback port
// of its own, and stops it when t ends. Its DSN names the same database.
func StartPgBouncer(t testing.TB, dsn string, poolSize int) *PgBouncer {
	t.Helper()
	bin := PgBouncerBinary(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	// pgbouncer refuses to run as root: as root it runs as postgres,
	// which must read its directory (MkdirTemp's is 0700, t.TempDir's
	// parents too).
	dir, err := os.MkdirTemp("", "orderly-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b := &PgBouncer{t: t, bin: bin, dir: dir, port: FreePort(t)}
	// trust: the server's own (pgembed's clusters trust local logins);
	// pgbouncer still wants the user listed. "*" sends every database
	// name to the server's database of that name. server_login_retry is
	// what docs/scaling.md gives a fleet's pooler, 1 s: after one failed
	// login (a server restarting) pgbouncer refuses every client for
	// that long without trying again, and with its default (15 s) a
	// PostgreSQL restart of one second held every worker for 15.
	conf := fmt.Sprintf(`[databases]
* = host=%s port=%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = transaction
default_pool_size = %d
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits
admin_users = %s
server_login_retry = 1
`, q.Get("host"), q.Get("port"), b.port, filepath.Join(dir, "users.txt"), poolSize, u.User.Username())
	if err := os.WriteFile(filepath.Join(dir, "pgbouncer.ini"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "users.txt"), fmt.Appendf(nil, "%q \"\"\n", u.User.Username()), 0o644); err != nil {
		t.Fatal(err)
	}
	b.Start()
	t.Cleanup(b.Stop)
	return b
}

// DSN is the URL of database db through the pooler, with extra (such as
// "default_query_exec_mode=cache_describe") appended to its query.
func (b *PgBouncer) DSN(db, extra string) string {
	s := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", b.port, db)
	if extra != "" {
		s += "&" + extra
	}
	return s
}

// Log is pgbouncer's log file.
func (b *PgBouncer) Log() string { return filepath.Join(b.dir, "pgbouncer.log") }

// Start runs pgbouncer, which must not be running, and waits until it
// accepts connections.
func (b *PgBouncer) Start() {
	b.t.Helper()
	logf, err := os.OpenFile(b.Log(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		b.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(b.bin, filepath.Join(b.dir, "pgbouncer.ini"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if os.Geteuid() == 0 {
		pu, err := user.Lookup("postgres")
		if err != nil {
			b.t.Fatalf("pgbouncer runs as postgres when the test is root: %v", err)
		}
		uid, _ := strconv.ParseUint(pu.Uid, 10, 32)
		gid, _ := strconv.ParseUint(pu.Gid, 10, 32)
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	if err := cmd.Start(); err != nil {
		b.t.Fatalf("start pgbouncer: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	b.cmd, b.done = cmd, done
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(b.port), time.Second); err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			b.t.Fatalf("pgbouncer exited at its start: %s", tail(b.Log(), 2000))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("pgbouncer not listening on %d after 30 s: %s", b.port, tail(b.Log(), 2000))
		}
	}
}

// Kill ends pgbouncer with SIGKILL, as a crash would: every client's
// connection and every server connection is cut.
func (b *PgBouncer) Kill() {
	b.t.Helper()
	b.signalWait(syscall.SIGKILL)
}

// Restart kills pgbouncer and starts it again on its port.
func (b *PgBouncer) Restart() {
	b.t.Helper()
	b.Kill()
	b.Start()
}

// Stop ends pgbouncer (SIGTERM: its immediate shutdown) unless it is not
// running.
func (b *PgBouncer) Stop() {
	b.signalWait(syscall.SIGTERM)
}

func (b *PgBouncer) signalWait(sig syscall.Signal) {
	if b.cmd == nil {
		return
	}
	select {
	case <-b.done:
		return
	default:
	}
	_ = b.cmd.Process.Signal(sig)
	select {
	case <-b.done:
	case <-time.After(10 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
	}
}

// tail is the end of the file at path, at most n bytes.
func tail(path string, n int) string {
	bs, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(bs[max(0, len(bs)-n):])
}
