// Command orderly-bench measures one `orderly serve` on this machine, through
// its real production path (managed PostgreSQL with fsync on, embedded NATS
// JetStream with sync always), and prints the results as markdown on stdout
// (progress goes to stderr). `make bench` runs it; docs/benchmarks.md says
// what every number means and what limits it.
//
// ORDERLY_* variables in the environment are passed on to serve, so a
// variant can be measured (for example ORDERLY_DATABASE_URL pointing at
// another PostgreSQL); the report lists them.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

type options struct {
	bin           string
	raw           int
	backlog       int
	sleepBacklog  int
	submitters    int
	latency       int
	async         int
	asyncWorkers  int
	natsIntake    int
	streamBytes   int64
	sseRuns       int
	settle        time.Duration
	skipStream    bool
	backlogHost   string
	nowhereHost   string
	pollInterval  time.Duration
	overallBudget time.Duration
	peerRounds    int
	peerTime      time.Duration
	levelBacklog  int
	history       string
	profile       string
	pprofURL      string
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "./bin/orderly", "the orderly binary to run serve from")
	flag.IntVar(&o.raw, "raw", 2000, "sequential execs of /bin/true for the raw rate")
	flag.IntVar(&o.backlog, "backlog", 2000, "orders of true in the per-host backlog")
	flag.IntVar(&o.sleepBacklog, "sleep-backlog", 200, "orders of 'sleep 0.01' in the second backlog (0: skip)")
	flag.IntVar(&o.submitters, "submitters", 16, "concurrent submitters for the backlog")
	flag.IntVar(&o.latency, "latency", 500, "sequential POST ?wait=10 for the idle latency")
	flag.IntVar(&o.async, "async", 5000, "async submissions (202) to a host with no worker")
	flag.IntVar(&o.asyncWorkers, "async-workers", 32, "concurrent async submitters")
	flag.IntVar(&o.natsIntake, "nats-intake", 2000, "NATS submissions per intake run, with 1 and 3 API replicas (0: skip)")
	flag.Int64Var(&o.streamBytes, "stream-bytes", 100<<20, "bytes the output-throughput order writes to stdout")
	flag.IntVar(&o.sseRuns, "sse", 5, "SSE first-byte runs of each kind (live, immediate)")
	flag.DurationVar(&o.settle, "settle", 25*time.Second, "pause before reading the idle RSS (serve gives freed memory back after 10-20 s without a garbage collection)")
	flag.BoolVar(&o.skipStream, "skip-stream", false, "skip the stdout-throughput and SSE measurements")
	flag.IntVar(&o.peerRounds, "peer-rounds", 5, "rounds of the alternated peer loads (0: skip the peers and hosts)")
	flag.DurationVar(&o.peerTime, "peer-time", 2*time.Second, "duration of each load in each round")
	flag.IntVar(&o.levelBacklog, "level-backlog", 1000, "orders of the worker-side backlog at each size of history")
	flag.StringVar(&o.history, "history", "0,100000,1000000", "sizes of history (orders, cumulative, bulk-loaded with COPY) the peer loads are measured at")
	flag.StringVar(&o.profile, "profile", "", "directory: build serve with net/http/pprof (go build -overlay), profile the sync, async and backlog paths into it and add the per-order budget")
	flag.Parse()
	o.backlogHost, o.nowhereHost = "bench", "nowhere"
	o.pollInterval = 20 * time.Millisecond
	o.overallBudget = 30 * time.Minute

	if o.profile != "" {
		if err := profiledBinary(&o); err != nil {
			fmt.Fprintln(os.Stderr, "orderly-bench:", err)
			os.Exit(1)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.overallBudget)
	defer cancel()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "orderly-bench:", err)
		os.Exit(1)
	}
}

var began = time.Now()

func progress(msg string) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(began).Seconds(), msg)
}

// report collects the headline rows and the detail rows.
type report struct {
	head     []string
	rows     [][4]string // measurement, result, target, verdict
	details  [][3]string // measurement, value, how
	sections []string    // markdown printed after the tables
}

func (r *report) row(name, value, target string, ok *bool) {
	v := ""
	if ok != nil {
		v = "✗ missed"
		if *ok {
			v = "✓ met"
		}
	}
	r.rows = append(r.rows, [4]string{name, value, target, v})
}

func (r *report) detail(name, value, how string) {
	r.details = append(r.details, [3]string{name, value, how})
}

func ptr(b bool) *bool { return &b }

func (r *report) print(w io.Writer) {
	fmt.Fprintln(w)
	for _, h := range r.head {
		fmt.Fprintln(w, h)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| measurement | result | target | |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, x := range r.rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", x[0], x[1], x[2], x[3])
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| detail | value | how |")
	fmt.Fprintln(w, "|---|---|---|")
	for _, x := range r.details {
		fmt.Fprintf(w, "| %s | %s | %s |\n", x[0], x[1], x[2])
	}
	for _, sec := range r.sections {
		fmt.Fprint(w, sec)
	}
}

func run(ctx context.Context, o options) error {
	rep := &report{}
	load := "?"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(b))[:3], " ")
	}

	// 1. Raw exec rate, before serve exists so nothing competes with it.
	progress(fmt.Sprintf("raw: %d sequential execs of /bin/true", o.raw))
	rawRate, err := rawExecRate(o.raw, false)
	if err != nil {
		return err
	}
	rawLikeWorker, err := rawExecRate(o.raw/2, true)
	if err != nil {
		return err
	}
	progress(fmt.Sprintf("raw: %.0f execs/s (%.0f/s with Setpgid, clean env and capture pipes)", rawRate, rawLikeWorker))

	// 2. serve.
	progress("starting " + o.bin + " serve (managed PostgreSQL with fsync, embedded NATS with sync always)")
	t := time.Now()
	srv, err := startServe(ctx, o.bin, "--nats-workers", strings.Join(extraHosts, ","))
	if err != nil {
		return err
	}
	var once sync.Once
	stopServe := func() {
		once.Do(func() {
			progress("stopping serve (SIGTERM)")
			t := time.Now()
			srv.stop()
			rep.detail("serve shutdown after SIGTERM", fmt.Sprintf("%.1fs (exit: %v)", time.Since(t).Seconds(), exitText(srv.waitErr)),
				"HTTP, worker, NATS, PostgreSQL; the data dir is then removed")
			progress(fmt.Sprintf("serve stopped in %.1fs (exit: %s); data dir removed", time.Since(t).Seconds(), exitText(srv.waitErr)))
		})
	}
	defer stopServe()
	startup := time.Since(t)
	progress(fmt.Sprintf("serve ready at %s in %.1fs", srv.url, startup.Seconds()))
	c := newClient(srv.url, srv.token, 128)

	rep.head = header(srv, startup, load)

	// Warm up: the worker may still be taking its lease and creating its
	// consumer; one order proves the whole path works.
	progress("warm-up order")
	if err := warmUp(ctx, c, o.backlogHost); err != nil {
		return err
	}
	memStart := srv.memory()

	rep.row("raw exec rate of /bin/true (os/exec, sequential)", fmt.Sprintf("%.0f execs/s", rawRate), "(baseline)", nil)
	rep.detail("raw exec, worker-like", fmt.Sprintf("%.0f execs/s", rawLikeWorker),
		"os/exec with Setpgid, empty env, stdout+stderr pipes drained")

	// 3. Backlog.
	if err := backlog(ctx, c, srv, o, rep, rawRate); err != nil {
		return err
	}
	if o.sleepBacklog > 0 {
		if err := backlogSleep(ctx, c, srv, o, rep); err != nil {
			return err
		}
	}
	// 4. Idle latency.
	if err := latency(ctx, c, srv, o, rep); err != nil {
		return err
	}
	// 5. Async submit rate.
	if err := asyncSubmit(ctx, c, srv, o, rep); err != nil {
		return err
	}
	// 5b. NATS intake rate with one and three API replicas (natsintake.go).
	if err := natsIntake(ctx, srv, o, rep); err != nil {
		return err
	}
	// 6. RSS after the runs settle.
	busy := srv.memory()
	progress(fmt.Sprintf("letting serve settle for %s, then reading its memory", o.settle))
	select {
	case <-time.After(o.settle):
	case <-ctx.Done():
		return ctx.Err()
	}
	mem := srv.memory()
	rep.row("serve RSS idle after the runs (API + embedded NATS + worker)", mib(mem.serveRSS), "≤ 60 MB (API)", ptr(mem.serveRSS <= 60*1024))
	rep.detail("serve RSS right after the runs / idle", fmt.Sprintf("%s / %s", mib(busy.serveRSS), mib(mem.serveRSS)),
		fmt.Sprintf("idle: %s later, once serve has given back what the runs freed (internal/memory)", o.settle))
	rep.detail("… of which file pages (serve's own executable), right after start / idle", fmt.Sprintf("%s / %s", mib(memStart.serveFile), mib(mem.serveFile)),
		"RssFile: RSS counts the executable's pages the kernel mapped (shared, clean); the rest is serve's own memory")
	rep.detail("serve RSS right after start + 1 order", mib(memStart.serveRSS), "VmRSS of the serve process")
	rep.detail("serve peak RSS during the order runs", mib(mem.serveHWM), "VmHWM")
	if mem.pgProcs > 0 {
		rep.detail("managed PostgreSQL memory", fmt.Sprintf("%s PSS (%s summed RSS), %d processes", mib(mem.pgPSS), mib(mem.pgRSS), mem.pgProcs),
			"postmaster and its children; PSS splits shared_buffers between them")
	}

	// 6a. A ?wait of 10 MiB kept output, on a serve that has not yet
	// grown through the peer loads (waitrss.go).
	if !o.skipStream {
		if err := waitRSS(ctx, c, srv, o, rep); err != nil {
			return err
		}
	}
	// 6b. The peer, the yardsticks and the hosts, at each size of history
	// (levels.go).
	if err := levels(ctx, srv, c, o, rep); err != nil {
		return err
	}

	// 7 and 8.
	if !o.skipStream {
		if err := streamThroughput(ctx, c, o, rep); err != nil {
			return err
		}
		if err := sseFirstByte(ctx, c, o, rep); err != nil {
			return err
		}
		end := srv.memory()
		rep.detail("serve RSS at the end (after the 100 MiB order)", mib(end.serveRSS), fmt.Sprintf("peak %s", mib(end.serveHWM)))
	}

	stopServe()
	rep.print(os.Stdout)
	return nil
}

func exitText(err error) string {
	if err == nil {
		return "0"
	}
	return err.Error()
}

func header(srv *server, startup time.Duration, load string) []string {
	model := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	kernel := "?"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	var overrides []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "ORDERLY_") {
			overrides = append(overrides, k)
		}
	}
	sort.Strings(overrides)
	cfg := "default configuration (managed PostgreSQL fsync=on, embedded NATS sync always) with the API rate limits off"
	if len(overrides) > 0 {
		cfg = "**variant**: " + strings.Join(overrides, ", ") + " set"
	}
	return []string{
		fmt.Sprintf("orderly-bench (`make bench`) — orderly %s, %s", srv.version, time.Now().UTC().Format("2006-01-02 15:04 UTC")),
		"",
		fmt.Sprintf("machine: %d × %s, Linux %s, %s, load average at the start %s; %s; serve ready in %.1fs",
			runtime.NumCPU(), model, kernel, runtime.Version(), load, cfg, startup.Seconds()),
	}
}
