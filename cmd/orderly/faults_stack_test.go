package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/natsembed"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
)

// faultConfig is the configuration every process of a fault test reads.
// nats.ack_wait keeps its default (30 s) on purpose: a recovery that waits
// for an ack timer then blows the recovery bound instead of hiding behind a
// short test setting.
const faultConfig = `database_url: %q
nats:
  url: %q
  lease_ttl: 2s
  heartbeat: 300ms
log:
  level: info
limits:
  rate_per_ip: 0
  rate_per_principal: 0
worker:
  command_path: [/usr/bin, /bin]
  kill_grace: 500ms
`

// faultTestPool is the application_name of a fault test's own
// connections to PostgreSQL.
const faultTestPool = "orderly-fault-test"

// faultStack is orderly as an operator runs it: an external nats-server, a
// PostgreSQL server, `orderly api` and `orderly worker` processes, each of
// which the test can kill, freeze or restart.
type faultStack struct {
	t      *testing.T
	dir    string
	pg     *faultPG
	nats   *natsServer
	pool   *pgxpool.Pool
	conf   string
	apiURL string
	token  string
	api    *faultProc
	apis   int // API processes started, for their log names
	// replica is a second `orderly api` on replicaURL, when a scenario
	// starts one (startReplica); clients then use both.
	replica    *faultProc
	replicaURL string
	// natsURL is the URL the configuration names: the server's, or every
	// node's of a cluster.
	natsURL string
	// creds, when the NATS servers run orderly's accounts (a cluster's
	// deploy/nats layout), are the seeds each process connects with:
	// the API's, each host's worker's, the submitters'. nil: an open bus.
	creds *natsembed.Credentials

	// workerEnv, when set, is extra environment for each worker of a
	// host (its NATS credential, say), before startWorkerEnv's own.
	workerEnv func(host string) []string

	mu      sync.Mutex
	workers []*faultWorker // every worker ever started, in start order
}

// faultWorker is one `orderly worker --host` process.
type faultWorker struct {
	*faultProc
	host string
}

// newFaultStack starts everything but the workers. The directory is kept
// for inspection when the test fails and ORDERLY_FAULTS_KEEP is set.
func newFaultStack(t *testing.T) *faultStack {
	t.Helper()
	return newFaultStackConf(t, nil)
}

// newFaultStackConf is newFaultStack with edit applied to the
// configuration text first (nil for none).
func newFaultStackConf(t *testing.T, edit func(conf string) string) *faultStack {
	t.Helper()
	return newFaultStackOn(t, "ofl-", func(s *faultStack) string {
		s.nats = startNATSServer(t, s.dir)
		return s.nats.url()
	}, edit)
}

// newFaultStackOn starts everything but the workers in a new directory
// named with prefix, the NATS side by startNATS (which returns the URL the
// configuration names), so that one server and a cluster share the rest.
func newFaultStackOn(t *testing.T, prefix string, startNATS func(s *faultStack) string, edit func(conf string) string) *faultStack {
	t.Helper()
	return newFaultStackWith(t, prefix, func(s *faultStack) string {
		s.pg = startFaultPG(t, s.dir)
		return s.pg.dsn()
	}, startNATS, edit)
}

// newFaultStackWith is newFaultStackOn with the PostgreSQL side started
// by startPG too, which sets s.pg and returns the connection string
// every process and the test's own pool use (a primary and its standby
// named as two hosts, say).
func newFaultStackWith(t *testing.T, prefix string, startPG, startNATS func(s *faultStack) string, edit func(conf string) string) *faultStack {
	t.Helper()
	dir := shortDir(t, prefix, os.Getenv("ORDERLY_FAULTS_KEEP") != "")
	s := &faultStack{t: t, dir: dir}
	t.Cleanup(s.dumpLogsOnFailure)
	dsn := startPG(s)
	natsURL := startNATS(s)
	s.natsURL = natsURL

	ctx := t.Context()
	var err error
	// Named, so that a test counting the connections of orderly's
	// processes (they name theirs) can tell the test's own apart.
	s.pool, err = postgres.OpenAs(ctx, dsn, faultTestPool)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.pool.Close)
	tok, sum := auth.NewToken()
	s.token = tok
	if _, err := postgres.New(s.pool).EnsureAPIToken(ctx, postgres.APIToken{Name: "admin", SHA256: sum, Roles: []string{"admin"}}); err != nil {
		t.Fatal(err)
	}
	s.conf = filepath.Join(dir, "orderly.yaml")
	conf := fmt.Sprintf(faultConfig, dsn, natsURL)
	if edit != nil {
		conf = edit(conf)
	}
	if err := os.WriteFile(s.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	s.apiURL = "http://127.0.0.1:" + strconv.Itoa(freePort(t))
	s.startAPI()
	return s
}

// startAPI starts `orderly api` on s.apiURL and waits until it is ready.
// The first one logs to api.log, later ones (restarts) to api-N.log.
func (s *faultStack) startAPI() {
	s.t.Helper()
	s.apis++
	name := "api"
	if s.apis > 1 {
		name = fmt.Sprintf("api-%d", s.apis)
	}
	s.api = s.startAPIAt(name, s.apiURL)
}

// startAPIAt starts `orderly api` named name (its log is name.log) on the
// base URL url and waits until it is ready.
func (s *faultStack) startAPIAt(name, url string) *faultProc {
	s.t.Helper()
	args := []string{"api", "--config", s.conf, "--listen", strings.TrimPrefix(url, "http://")}
	if s.creds != nil {
		args = append(args, "--nats-nkey", s.creds.API)
	}
	p := startFaultProc(s.t, name, filepath.Join(s.dir, name+".log"), s.env(), orderlyBin, args...)
	waitHTTPOK(s.t, url+"/readyz", 60*time.Second, p)
	return p
}

// startReplica starts a second `orderly api` process beside the first,
// on its own port, and waits until it is ready.
func (s *faultStack) startReplica() {
	s.t.Helper()
	s.replicaURL = "http://127.0.0.1:" + strconv.Itoa(freePort(s.t))
	s.replica = s.startAPIAt("api-replica", s.replicaURL)
}

// apiURLs are the API processes' base URLs: the first, and the replica's
// when there is one.
func (s *faultStack) apiURLs() []string {
	if s.replicaURL == "" {
		return []string{s.apiURL}
	}
	return []string{s.apiURL, s.replicaURL}
}

// killAPI SIGKILLs the API process, as a crash would, and waits until it
// is gone.
func (s *faultStack) killAPI() {
	s.t.Helper()
	s.api.signal(syscall.SIGKILL)
	if !s.api.waitExit(10 * time.Second) {
		s.t.Fatalf("%s (pid %d) did not exit after SIGKILL", s.api.name, s.api.pid())
	}
}

// apiNATS are the options of the test's own connections that inspect
// orderly's streams: the API's seed and inbox when the servers run the
// accounts, since JetStream is in its account.
func (s *faultStack) apiNATS() []nats.Option {
	if s.creds == nil {
		return nil
	}
	return seedOptions(s.t, s.creds.API, queue.APIInbox)
}

func (s *faultStack) env() []string {
	return []string{"PATH=/usr/bin:/bin", "HOME=" + s.dir}
}

// startWorker starts one more worker for host; it takes the host or waits
// as standby, as orderly decides.
func (s *faultStack) startWorker(host string) *faultWorker {
	s.t.Helper()
	return s.startWorkerEnv(host)
}

// startWorkerEnv is startWorker with extra environment (configuration
// overrides, ORDERLY_<SECTION>__<KEY>).
func (s *faultStack) startWorkerEnv(host string, extra ...string) *faultWorker {
	s.t.Helper()
	s.mu.Lock()
	n := len(s.workers) + 1
	s.mu.Unlock()
	name := fmt.Sprintf("worker-%s-%d", host, n)
	env := s.env()
	if s.workerEnv != nil {
		env = append(env, s.workerEnv(host)...)
	}
	args := []string{"worker", "--config", s.conf, "--host", host}
	if s.creds != nil {
		seed, ok := s.creds.Workers[host]
		if !ok {
			s.t.Fatalf("no NATS account for host %s: name it when starting the stack", host)
		}
		// As serve's `add a worker:` line and docs/deploy.md: the
		// host's own seed, which puts it in WORKER_<host>.
		args = append(args, "--nats-nkey", seed)
	}
	p := startFaultProc(s.t, name, filepath.Join(s.dir, name+".log"), append(env, extra...), orderlyBin, args...)
	w := &faultWorker{faultProc: p, host: host}
	s.mu.Lock()
	s.workers = append(s.workers, w)
	s.mu.Unlock()
	return w
}

// liveWorkers returns the workers of host that have not exited.
func (s *faultStack) liveWorkers(host string) []*faultWorker {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*faultWorker
	for _, w := range s.workers {
		if w.host == host && w.alive() {
			out = append(out, w)
		}
	}
	return out
}

// workerRunning returns the worker whose child is running the order with
// tag, found through /proc: the order's shell is a direct child of the
// worker that executes it.
func (s *faultStack) workerRunning(tag, marker string) *faultWorker {
	for _, pid := range procsWithArgs(tag, marker) {
		ppid := parentPid(pid)
		s.mu.Lock()
		for _, w := range s.workers {
			if w.pid() == ppid {
				s.mu.Unlock()
				return w
			}
		}
		s.mu.Unlock()
	}
	return nil
}

// note appends a timestamped line to faults.log in the test directory: the
// faults injected, in order, to read next to the process logs.
func (s *faultStack) note(format string, args ...any) {
	f, err := os.OpenFile(filepath.Join(s.dir, "faults.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s %s\n", time.Now().UTC().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// dumpLogsOnFailure shows the end of every process log of a failed test,
// without the per-order lines, which drown what happened to the process.
func (s *faultStack) dumpLogsOnFailure() {
	if !s.t.Failed() {
		return
	}
	logs, _ := filepath.Glob(filepath.Join(s.dir, "*.log"))
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		var keep []string
		for line := range strings.Lines(string(b)) {
			if !strings.Contains(line, `msg="order started"`) && !strings.Contains(line, `msg="order finished"`) {
				keep = append(keep, strings.TrimRight(line, "\n"))
			}
		}
		keep = keep[max(0, len(keep)-40):]
		s.t.Logf("--- %s (last 40 lines but order started/finished) ---\n%s", filepath.Base(l), strings.Join(keep, "\n"))
	}
}

// procsWithArgs lists live processes (zombies excluded) whose argv holds
// every one of args as a whole argument.
// runTag names one run of test t in the arguments of the orders it
// starts, for procsWithArgs: the test's name alone is shared by every
// copy of the suite running on the machine at once (a CI beside a
// developer's run), whose orders would count as this run's leftovers (a
// CI failed on a live order of another checkout's run, 2026-12-06).
func runTag(prefix string, t testing.TB) string {
	return prefix + "-" + strings.ReplaceAll(t.Name(), "/", "-") + "-" + uuid.NewString()[:8]
}

func procsWithArgs(args ...string) []int {
	return liveProcs(func(pid int) bool {
		cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if err != nil || len(cmdline) == 0 {
			return false
		}
		return hasAll(strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00"), args)
	})
}

// liveProcs lists the live processes (zombies excluded) that match.
func liveProcs(match func(pid int) bool) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !match(pid) || procState(pid) == 'Z' {
			continue
		}
		out = append(out, pid)
	}
	return out
}

// globMatch reports whether v is want, or begins with want's prefix when
// want ends in *.
func globMatch(v, want string) bool {
	return v == want || strings.HasSuffix(want, "*") && strings.HasPrefix(v, strings.TrimSuffix(want, "*"))
}

func hasAll(argv, want []string) bool {
	for _, w := range want {
		found := false
		for _, a := range argv {
			if globMatch(a, w) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// procState is the state letter of /proc/<pid>/stat, 0 when pid is gone.
func procState(pid int) byte {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := bytes.Fields(b[bytes.LastIndexByte(b, ')')+1:])
	if len(f) < 1 || len(f[0]) != 1 {
		return 0
	}
	return f[0][0]
}

func parentPid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := bytes.Fields(b[bytes.LastIndexByte(b, ')')+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(string(f[1]))
	return ppid
}

// killProcs SIGKILLs the processes whose argv holds all of args; fault
// tests call it on cleanup for the orphans they found.
func killProcs(args ...string) {
	for _, pid := range procsWithArgs(args...) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// pause waits d unless ctx ends first. It paces load and holds faults
// (an outage lasts d); it never stands in for waiting on an event.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
