package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/pgembed"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/migrations"
)

// faultProc is a child process of a fault test (orderly api, orderly worker,
// nats-server) that the test can signal like an operator or a crash would.
// Its output goes to a log file that is shown when the test fails.
type faultProc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	done   chan struct{} // closed once the process exited and was reaped
	killed atomic.Bool   // SIGKILL was sent while it was alive
}

// startFaultProc starts bin with args and env, appending its output to
// logPath, with faultProcAttr.
func startFaultProc(t testing.TB, name, logPath string, env []string, bin string, args ...string) *faultProc {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // the child keeps its own copy
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = faultProcAttr()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &faultProc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop(5 * time.Second) })
	return p
}

// faultProcAttr starts a fault process in a process group of its own,
// whose parent (the test binary) is in the same session: that group is
// never orphaned while the test binary runs, so the kernel never sends it
// the SIGHUP and SIGCONT it sends a group orphaned with a stopped member
// (POSIX orphaned process groups). In the test binary's group, as before,
// a worker the test froze with SIGSTOP was thawed (its SIGHUP a config
// reload) whenever that group lost its last member with a parent outside
// it in the session, which is the shell's doing, not the test's: the
// shell that started `go test` as a job ending while the test runs
// (TestFaultProcStaysFrozenWhenItsParentsGroupIsOrphaned). Pdeathsig ends
// the process if the test binary dies without cleaning up, which a
// terminal's ^C to the test's group no longer does.
func faultProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

func (p *faultProc) pid() int { return p.cmd.Process.Pid }

// alive reports whether the process has not exited yet (a stopped process
// is alive).
func (p *faultProc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// signal sends sig unless the process already exited.
func (p *faultProc) signal(sig syscall.Signal) {
	if p.alive() {
		if sig == syscall.SIGKILL {
			p.killed.Store(true)
		}
		_ = p.cmd.Process.Signal(sig)
	}
}

// waitExit waits up to d for the process to exit and reports whether it did.
func (p *faultProc) waitExit(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// stop ends the process: SIGCONT (it may be frozen) and SIGTERM, then
// SIGKILL after grace.
func (p *faultProc) stop(grace time.Duration) {
	p.signal(syscall.SIGCONT)
	p.signal(syscall.SIGTERM)
	if !p.waitExit(grace) {
		p.signal(syscall.SIGKILL)
		p.waitExit(30 * time.Second)
	}
}

// freePort is testenv.FreePort: a port below the ephemeral range, for a
// child process to bind and bind again after a restart.
func freePort(t testing.TB) int { return testenv.FreePort(t) }

// natsServerBin builds nats-server from the module orderly depends on, once
// per test binary, next to orderlyBin. Like orderlyBin it is package state
// because TestMain is the only other place a test binary can share it.
var natsServerBin = sync.OnceValues(func() (string, error) {
	path := filepath.Join(filepath.Dir(orderlyBin), "nats-server")
	if os.Getenv(binDirEnv) != "" {
		return path, nil // built by the outer run, before it ran this one
	}
	out, err := exec.Command("go", "build", "-o", path, "github.com/nats-io/nats-server/v2").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build nats-server: %w\n%s", err, out)
	}
	return path, nil
})

// natsServer is an external nats-server with JetStream on a fixed port and
// store directory, so that it can be killed and restarted as the same
// server, keeping its streams.
type natsServer struct {
	t        testing.TB
	bin      string
	conf     string
	logPath  string
	port     int
	httpPort int
	proc     *faultProc
}

func startNATSServer(t testing.TB, dir string) *natsServer {
	t.Helper()
	n := newNATSServer(t, dir, "")
	n.start()
	return n
}

// newNATSServer writes the configuration of an external nats-server with
// JetStream and extra appended, on ports chosen now, without starting it.
func newNATSServer(t testing.TB, dir, extra string) *natsServer {
	t.Helper()
	bin, err := natsServerBin()
	if err != nil {
		t.Fatal(err)
	}
	n := &natsServer{t: t, bin: bin, conf: filepath.Join(dir, "nats.conf"), logPath: filepath.Join(dir, "nats-server.log"),
		port: freePort(t), httpPort: freePort(t)}
	// sync_interval: always is what DESIGN §2.4 requires: without it a
	// kill -9 may lose messages the server had already acknowledged.
	conf := fmt.Sprintf("listen: \"127.0.0.1:%d\"\nhttp: \"127.0.0.1:%d\"\njetstream {\n  store_dir: %q\n  sync_interval: always\n}\n%s",
		n.port, n.httpPort, filepath.Join(dir, "jetstream"), extra)
	if err := os.WriteFile(n.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *natsServer) url() string { return "nats://127.0.0.1:" + strconv.Itoa(n.port) }

// start runs the server and waits until its JetStream is ready.
func (n *natsServer) start() {
	n.t.Helper()
	n.proc = startFaultProc(n.t, "nats-server", n.logPath, []string{"PATH=/usr/bin:/bin"}, n.bin, "-c", n.conf)
	waitHTTPOK(n.t, fmt.Sprintf("http://127.0.0.1:%d/healthz", n.httpPort), 60*time.Second, n.proc)
}

// kill9 kills the server as a crash would and waits until it is gone.
func (n *natsServer) kill9() {
	n.proc.signal(syscall.SIGKILL)
	if !n.proc.waitExit(30 * time.Second) {
		n.t.Fatal("nats-server did not die from SIGKILL")
	}
}

// waitHTTPOK polls url until it answers 200, failing the test after d or
// when p exits first.
func waitHTTPOK(t testing.TB, url string, d time.Duration, p *faultProc) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if !p.alive() {
			t.Fatalf("%s exited before %s answered 200; log %s:\n%s", p.name, url, p.log, logTail(p.log, 30))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s did not answer 200 within %s; log:\n%s", p.name, url, d, logTail(p.log, 30))
		}
		<-tick.C
	}
}

// faultPG is a PostgreSQL cluster owned by one fault test, so the test can
// crash-restart it (pg_ctl restart -m immediate) without touching the
// cluster other tests share.
type faultPG struct {
	t      testing.TB
	srv    *pgembed.Server
	dir    string
	binDir string
}

// pgTemplateEnv names, in a test binary run again inside a mount
// namespace, the data directory of the outer run's template cluster.
const pgTemplateEnv = "ORDERLY_TEST_PG_TEMPLATE"

// faultPGTemplateDir holds the template cluster faultPGTemplate made, if
// it made one; TestMain removes it.
var faultPGTemplateDir string

// faultPGTemplate initializes a cluster, migrates its orderly database and
// stops it, once per test binary, and returns its data directory: each
// fault stack's cluster is a copy of it (cp -a keeps postgres's
// ownership), not an initdb and every migration of its own (about 1.7 s
// of CPU, over 10 s on a loaded machine, for each of the package's 40 or
// so stacks; the copy is about 0.4 s of CPU).
// An inner run (inActionNamespace) copies its outer run's, named in
// pgTemplateEnv.
var faultPGTemplate = sync.OnceValues(func() (string, error) {
	if dir := os.Getenv(pgTemplateEnv); dir != "" {
		return dir, nil // the outer run's: it removes it
	}
	binDir, err := pgembed.FindBinaries()
	if err != nil {
		return "", err
	}
	top, err := os.MkdirTemp("", "orderly-pgtemplate-")
	if err != nil {
		return "", err
	}
	faultPGTemplateDir = top
	// postgres must reach Dir (top/pg) through it.
	if err := os.Chmod(top, 0o755); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := pgembed.Start(ctx, pgembed.Options{Dir: filepath.Join(top, "pg"), BinDir: binDir, Database: "orderly", Fsync: false})
	if err != nil {
		return "", fmt.Errorf("template cluster: %w", err)
	}
	_, err = migrations.Up(ctx, srv.DSN(), nil)
	if serr := srv.Stop(ctx); err == nil {
		err = serr
	}
	if err != nil {
		return "", fmt.Errorf("template cluster: %w", err)
	}
	return filepath.Join(top, "pg", "data"), nil
})

// startFaultPG runs a cluster in dir/pg with the orderly database migrated
// (a copy of faultPGTemplate's; migrations.Up then finds nothing to do).
// fsync is off (only process crashes are injected, never an OS crash), but
// synchronous_commit keeps its default, on: a committed order must survive
// an immediate shutdown.
func startFaultPG(t testing.TB, dir string) *faultPG {
	t.Helper()
	binDir, err := pgembed.FindBinaries()
	if err != nil {
		t.Fatal(err)
	}
	p := &faultPG{t: t, dir: filepath.Join(dir, "pg"), binDir: binDir}
	tmpl, err := faultPGTemplate()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", tmpl, filepath.Join(p.dir, "data")).CombinedOutput(); err != nil {
		t.Fatalf("copy the template cluster: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	p.srv, err = pgembed.Start(ctx, pgembed.Options{Dir: p.dir, BinDir: binDir, Database: "orderly", Fsync: false})
	if err != nil {
		t.Fatal(err)
	}
	stopGuard, err := guardCluster(p.dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := p.srv.Stop(ctx); err != nil {
			t.Errorf("stop fault test postgresql: %v", err)
		}
		stopGuard()
	})
	if _, err := migrations.Up(ctx, p.srv.DSN(), nil); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *faultPG) dsn() string { return p.srv.DSN() }

// signal sends sig to the postmaster and every process it started (a
// SIGSTOP freezes the whole server: queries already sent wait in their
// sockets, and run when SIGCONT comes).
func (p *faultPG) signal(sig syscall.Signal) {
	p.t.Helper()
	b, err := os.ReadFile(filepath.Join(p.dir, "data", "postmaster.pid"))
	if err != nil {
		p.t.Fatalf("read postmaster.pid: %v", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pm, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		p.t.Fatalf("postmaster.pid: %v", err)
	}
	_ = syscall.Kill(pm, sig)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && parentPid(pid) == pm {
			_ = syscall.Kill(pid, sig)
		}
	}
}

// restartImmediate crashes the server (every backend is killed, nothing is
// checkpointed) and starts it again with the same settings; it returns once
// the server accepts connections.
func (p *faultPG) restartImmediate() {
	p.t.Helper()
	out, err := p.ctl("restart", "-m", "immediate", "-w", "-t", "60", "-D", filepath.Join(p.dir, "data"),
		"-l", filepath.Join(p.dir, "postgres.log"))
	if err != nil {
		p.t.Fatalf("pg_ctl restart -m immediate: %v\n%s", err, out)
	}
}

// ctl runs pg_ctl as the cluster's owner: postgres when we are root.
func (p *faultPG) ctl(args ...string) ([]byte, error) {
	return p.run("pg_ctl", args...)
}

// run runs one of PostgreSQL's programs as the cluster's owner: postgres
// when we are root.
func (p *faultPG) run(program string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(p.binDir, program), args...)
	cmd.Dir = p.dir
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "PG") })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, err
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd.CombinedOutput()
}

// guardScript waits for end of file on stdin, which comes when the test
// binary dies without its cleanup (a -timeout panic, a kill), and then
// stops the postmaster named in the pid file at that moment (a restart
// changes it) with an immediate shutdown.
const guardScript = `read -r _
read -r pid < "$1/data/postmaster.pid" && kill -QUIT "$pid" 2>/dev/null
`

// guardCluster keeps the cluster in dir from outliving the test binary.
// pg_ctl daemonizes the postmaster, so Pdeathsig cannot do it. The
// returned function disarms the guard after a normal stop.
func guardCluster(dir string) (func(), error) {
	cmd := exec.Command("/bin/sh", "-c", guardScript, "faults-pg-guard", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("pg guard: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("pg guard: %w", err)
	}
	return func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		_ = stdin.Close()
	}, nil
}

// logTail returns the last n lines of the file at path.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "(no log)"
		}
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// removeFaultPGTemplate removes the template cluster of faultPGTemplate,
// once the tests that copy it have ended.
func removeFaultPGTemplate() {
	if faultPGTemplateDir != "" {
		_ = os.RemoveAll(faultPGTemplateDir)
	}
}
