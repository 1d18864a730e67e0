package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/orderly-run/orderly/internal/procfs"
)

// benchEnv is set for serve unless the environment sets the same key.
var benchEnv = []string{"ORDERLY_LIMITS__RATE_PER_PRINCIPAL=0", "ORDERLY_LIMITS__RATE_PER_IP=0"}

// server is one `orderly serve` process with a private, temporary data dir.
type server struct {
	cmd     *exec.Cmd
	dir     string
	url     string
	token   string
	version string
	natsURL string // from the banner's "add a worker" line
	dsn     string
	pg      *pgWatch // the managed cluster's processes, read every pgPoll
	exited  chan struct{}
	waitErr error
}

// startServe runs `<bin> serve` on a fresh temp data dir with the API and
// NATS on random loopback ports, and waits for the "API:" line of its banner.
func startServe(ctx context.Context, bin string, extra ...string) (*server, error) {
	dir, err := os.MkdirTemp("", "orderly-bench-")
	if err != nil {
		return nil, err
	}
	// The managed PostgreSQL runs as the postgres user when we are root: it
	// must be able to traverse the data dir to reach its own pg/.
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s := &server{dir: dir, exited: make(chan struct{})}
	cmd := exec.Command(bin, append([]string{"serve", "--data-dir", dir, "--listen", "127.0.0.1:0", "--host", "bench"}, extra...)...)
	cmd.Env = append(os.Environ(), "ORDERLY_NATS__LISTEN=127.0.0.1:0", "ORDERLY_LOG__LEVEL=warn")
	// A benchmark is a flood from one principal and one address: the
	// default rate limits (600 and 1200 requests a minute) would measure
	// only themselves. The environment may still set them.
	for _, kv := range benchEnv {
		k, _, _ := strings.Cut(kv, "=")
		if _, set := os.LookupEnv(k); !set {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// Its own process group, so a Ctrl-C on the bench reaches serve only
	// through our orderly SIGTERM in stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s serve: %w", bin, err)
	}
	s.cmd = cmd
	go prefixLines(stderr, "  serve| ")

	type banner struct{ url, version, natsURL, dsn string }
	got := make(chan banner, 1)
	var outWG sync.WaitGroup
	outWG.Add(1)
	go func() {
		defer outWG.Done()
		sc := bufio.NewScanner(stdout)
		var b banner
		sent := false
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if v, ok := strings.CutPrefix(line, "orderly "); ok && strings.HasSuffix(v, " is running") {
				b.version = strings.TrimSuffix(v, " is running")
			}
			if v, ok := strings.CutPrefix(line, "API:"); ok {
				b.url = strings.TrimSpace(v)
			}
			// The banner's last line: orderly worker … --nats-url U … --database-url 'D'.
			if v, ok := strings.CutPrefix(line, "add a worker:"); ok && !sent {
				b.natsURL, b.dsn = bannerFlag(v, "--nats-url"), strings.Trim(bannerFlag(v, "--database-url"), "'")
				got <- b
				sent = true
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		outWG.Wait() // os/exec: finish reading the pipes before Wait
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()

	timer := time.NewTimer(120 * time.Second)
	defer timer.Stop()
	select {
	case b := <-got:
		s.url, s.version, s.natsURL, s.dsn = b.url, b.version, b.natsURL, b.dsn
	case <-s.exited:
		s.cleanup()
		return nil, fmt.Errorf("orderly serve exited before it was ready: %v", s.waitErr)
	case <-timer.C:
		s.stop()
		return nil, errors.New("orderly serve did not print its API URL within 120s")
	case <-ctx.Done():
		s.stop()
		return nil, ctx.Err()
	}
	tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("read admin token: %w", err)
	}
	s.token = strings.TrimSpace(string(tok))
	s.pg = watchPG(s.postmasterPID, pgPoll)
	return s, nil
}

// pgPoll is how often the managed cluster's processes are read: an
// autovacuum worker lives 0.3 s and longer.
const pgPoll = 100 * time.Millisecond

// bannerFlag is the word after flag in line.
func bannerFlag(line, flag string) string {
	f := strings.Fields(line)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == flag {
			return f[i+1]
		}
	}
	return ""
}

func prefixLines(r io.Reader, prefix string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fmt.Fprintln(os.Stderr, prefix+sc.Text())
	}
	_, _ = io.Copy(io.Discard, r)
}

// stop sends SIGTERM, waits for a clean shutdown (HTTP, worker, NATS,
// PostgreSQL), and removes the data dir.
func (s *server) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(90 * time.Second):
			progress("serve did not stop within 90s after SIGTERM; killing it")
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	}
	s.cleanup()
}

// cleanup stops a managed PostgreSQL that outlived serve (only if serve
// died without stopping it) and removes the data dir.
func (s *server) cleanup() {
	if s.pg != nil {
		s.pg.close()
	}
	if pid := s.postmasterPID(); pid > 0 && processAlive(pid) {
		progress(fmt.Sprintf("managed PostgreSQL (pid %d) outlived serve; stopping it", pid))
		_ = syscall.Kill(pid, syscall.SIGINT) // fast shutdown
		for i := 0; i < 100 && processAlive(pid); i++ {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if s.dir != "" {
		if err := os.RemoveAll(s.dir); err != nil {
			progress("remove " + s.dir + ": " + err.Error())
		}
	}
}

func processAlive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// postmasterPID is the managed cluster's postmaster, 0 if there is none
// (for example with ORDERLY_DATABASE_URL set).
func (s *server) postmasterPID() int {
	b, err := os.ReadFile(filepath.Join(s.dir, "pg", "data", "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

// memory is a snapshot of the processes' memory in KiB.
type memory struct {
	serveRSS, serveHWM int64
	serveFile          int64 // of serveRSS: file pages, nearly all serve's own executable
	pgProcs            int
	pgRSS, pgPSS       int64 // summed over the postmaster and its children
}

func (s *server) memory() memory {
	var m memory
	st := procStatus(s.cmd.Process.Pid)
	m.serveRSS, m.serveHWM, m.serveFile = st["VmRSS"], st["VmHWM"], st["RssFile"]
	pm := s.postmasterPID()
	if pm == 0 {
		return m
	}
	pids := append([]int{pm}, procfs.Children(pm)...)
	for _, pid := range pids {
		st := procStatus(pid)
		if st == nil {
			continue
		}
		m.pgProcs++
		m.pgRSS += st["VmRSS"]
		m.pgPSS += procPSS(pid)
	}
	return m
}

// procStatus reads the kB fields of /proc/<pid>/status.
func procStatus(pid int) map[string]int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil
	}
	out := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 2 && f[1] == "kB" {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			out[k] = n
		}
	}
	return out
}

// procPSS is the proportional set size (shared pages split between the
// processes mapping them), which does not count shared_buffers once per
// backend the way RSS does.
func procPSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Pss:"); ok {
			f := strings.Fields(v)
			if len(f) >= 1 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// cpuSample is the CPU time used so far by the processes of the bench, and
// the machine's busy and total ticks, to split a phase's CPU by component.
type cpuSample struct {
	at                       time.Time
	serveSelf, serveChildren time.Duration // children: the orders' processes
	pg                       pgSample      // the managed cluster, by process
	bench                    time.Duration
	// workers: of serveSelf, the extra hosts' worker processes; idle:
	// orderly's processes (serve and those workers) while a peer's load
	// ran, which nothing of that load asked for.
	workers, idle             time.Duration
	machineBusy, machineTotal uint64
}

const clockTick = 10 * time.Millisecond // USER_HZ is 100 on Linux

func (s *server) cpu() cpuSample {
	c := machineAndBench()
	if f := procfs.Fields(s.cmd.Process.Pid); f != nil {
		c.serveSelf = ticks(f[11]) + ticks(f[12])
		c.serveChildren = ticks(f[13]) + ticks(f[14])
	}
	if s.pg != nil {
		c.pg = s.pg.sample()
	}
	return c
}

// machineAndBench samples the bench's own CPU (less its watchers' of
// the cluster's processes) and the machine's ticks.
func machineAndBench() cpuSample {
	c := cpuSample{at: time.Now()}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		c.bench = time.Duration(ru.Utime.Nano()+ru.Stime.Nano()) - time.Duration(watcherCPU.Load())
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		for i, v := range f[1:] {
			n, _ := strconv.ParseUint(v, 10, 64)
			c.machineTotal += n
			if i != 3 && i != 4 { // idle, iowait
				c.machineBusy += n
			}
		}
	}
	return c
}

func ticks(s string) time.Duration {
	n, _ := strconv.ParseInt(s, 10, 64)
	return time.Duration(n) * clockTick
}

// cpuPerOrder describes the CPU a phase of n orders used, per order.
func cpuPerOrder(a, b cpuSample, n int) string {
	per := func(d time.Duration) string {
		return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)/float64(n))
	}
	serve := b.serveSelf - a.serveSelf
	kids := b.serveChildren - a.serveChildren
	pg := b.pg.total() - a.pg.total()
	bench := b.bench - a.bench
	total := serve + kids + pg + bench
	busy, other := 0.0, 0.0
	if dt := b.machineTotal - a.machineTotal; dt > 0 {
		busy = 100 * float64(b.machineBusy-a.machineBusy) / float64(dt)
		other = max(0, busy-100*float64(total/clockTick)/float64(dt))
	}
	pgBy := ""
	if pg > 0 {
		pgBy = " (" + describePG(pgSplit(a.pg, b.pg), n) + ")"
	}
	return fmt.Sprintf("%s ms CPU/order: serve %s + its commands %s, PostgreSQL %s%s, bench client %s; machine %.0f %% busy (other processes %.0f %%)",
		per(total), per(serve), per(kids), per(pg), pgBy, per(bench), busy, other)
}
