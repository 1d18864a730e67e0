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
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	flag.DurationVar(&o.settle, "settle", 3*time.Second, "pause before reading the idle RSS")
	flag.BoolVar(&o.skipStream, "skip-stream", false, "skip the stdout-throughput and SSE measurements")
	flag.Parse()
	o.backlogHost, o.nowhereHost = "bench", "nowhere"
	o.pollInterval = 20 * time.Millisecond
	o.overallBudget = 10 * time.Minute

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
	head    []string
	rows    [][4]string // measurement, result, target, verdict
	details [][3]string // measurement, value, how
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
	srv, err := startServe(ctx, o.bin)
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
	progress(fmt.Sprintf("letting serve settle for %s, then reading its memory", o.settle))
	select {
	case <-time.After(o.settle):
	case <-ctx.Done():
		return ctx.Err()
	}
	mem := srv.memory()
	rep.row("serve RSS idle after the runs (API + embedded NATS + worker)", mib(mem.serveRSS), "≤ 60 MB (API)", ptr(mem.serveRSS <= 60*1024))
	rep.detail("serve RSS right after start + 1 order", mib(memStart.serveRSS), "VmRSS of the serve process")
	rep.detail("serve peak RSS during the order runs", mib(mem.serveHWM), "VmHWM")
	if mem.pgProcs > 0 {
		rep.detail("managed PostgreSQL memory", fmt.Sprintf("%s PSS (%s summed RSS), %d processes", mib(mem.pgPSS), mib(mem.pgRSS), mem.pgProcs),
			"postmaster and its children; PSS splits shared_buffers between them")
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

// ---------------------------------------------------------------- raw exec

func rawExecRate(n int, workerLike bool) (float64, error) {
	start := time.Now()
	for i := 0; i < n; i++ {
		cmd := exec.Command("/bin/true")
		if workerLike {
			cmd.Env = []string{}
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
			cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		}
		if err := cmd.Run(); err != nil {
			return 0, fmt.Errorf("raw exec of /bin/true: %w", err)
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// ---------------------------------------------------------------- client

type client struct {
	base, token string
	hc          *http.Client
}

func newClient(base, token string, conns int) *client {
	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, DisableCompression: true,
		IdleConnTimeout: time.Minute}
	return &client{base: base, token: token, hc: &http.Client{Transport: tr, Timeout: 3 * time.Minute}}
}

func (c *client) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// doTimed is do that also returns when the response headers arrived.
func (c *client) doTimed(ctx context.Context, method, path string, body []byte) (int, []byte, time.Duration, error) {
	t := time.Now()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, 0, err
	}
	headers := time.Since(t)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, headers, err
}

type orderResp struct {
	ID          string     `json:"id"`
	Status      string     `json:"status"`
	SubmittedAt time.Time  `json:"submitted_at"`
	StartedAt   *time.Time `json:"started_at"`
	FinishedAt  *time.Time `json:"finished_at"`
	Result      *struct {
		ExitCode   *int  `json:"exit_code"`
		DurationMS int64 `json:"duration_ms"`
		Stdout     struct {
			Bytes     int64  `json:"bytes"`
			Truncated bool   `json:"truncated"`
			SHA256    string `json:"sha256"`
		} `json:"stdout"`
	} `json:"result"`
}

func orderBody(host, command string, args ...string) []byte {
	b, _ := json.Marshal(map[string]any{"host": host, "command": command, "args": args})
	return b
}

func (c *client) submit(ctx context.Context, body []byte, query string) (int, *orderResp, error) {
	code, b, err := c.do(ctx, http.MethodPost, "/v1/orders"+query, body)
	if err != nil {
		return code, nil, err
	}
	if code != http.StatusOK && code != http.StatusAccepted {
		return code, nil, fmt.Errorf("POST /v1/orders%s: %d %s", query, code, bytes.TrimSpace(b))
	}
	var o orderResp
	if err := json.Unmarshal(b, &o); err != nil {
		return code, nil, fmt.Errorf("decode order: %w", err)
	}
	return code, &o, nil
}

func warmUp(ctx context.Context, c *client, host string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, o, err := c.submit(ctx, orderBody(host, "true"), "?wait=10")
		if err == nil && o.Status == "succeeded" {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("warm-up order ended %s", o.Status)
			}
			return fmt.Errorf("warm-up: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ---------------------------------------------------------------- backlog

// backlogRun is one backlog: orders submitted without waiting, drained by
// the host's worker, with their own timestamps.
type backlogRun struct {
	t0, submitted        time.Time
	cpu0, cpuSub, cpuEnd cpuSample
	observed             time.Duration
	list                 []orderResp // sorted by started_at
}

// runBacklog submits n copies of body from the given number of goroutines,
// waits until no order of host is queued or running, and fetches them.
func runBacklog(ctx context.Context, c *client, srv *server, host string, body []byte, n, submitters int, poll time.Duration) (*backlogRun, error) {
	r := &backlogRun{cpu0: srv.cpu()}
	ids := make([]string, n)
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	r.t0 = time.Now()
	for g := 0; g < submitters; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				_, or, err := c.submit(ctx, body, "")
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				ids[i] = or.ID
			}
		}()
	}
	wg.Wait()
	r.submitted = time.Now()
	r.cpuSub = srv.cpu()
	if firstErr != nil {
		return nil, fmt.Errorf("backlog submit: %w", firstErr)
	}
	submitDur := r.submitted.Sub(r.t0)
	progress(fmt.Sprintf("backlog: submitted in %.2fs (%.0f/s); waiting for the worker to drain it", submitDur.Seconds(), float64(n)/submitDur.Seconds()))

	// Drained when no order of the host is queued or running.
	path := "/v1/orders?host=" + host + "&status=queued,running&limit=1"
	lastLog := time.Now()
	for {
		code, b, err := c.do(ctx, http.MethodGet, path, nil)
		if err != nil {
			return nil, err
		}
		if code != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %d %s", path, code, b)
		}
		var l struct {
			Orders []json.RawMessage `json:"orders"`
		}
		if err := json.Unmarshal(b, &l); err != nil {
			return nil, err
		}
		if len(l.Orders) == 0 {
			break
		}
		if time.Since(lastLog) > 5*time.Second {
			progress("backlog: still draining…")
			lastLog = time.Now()
		}
		if time.Since(r.t0) > 5*time.Minute {
			return nil, errors.New("backlog did not drain within 5 minutes")
		}
		time.Sleep(poll)
	}
	r.observed = time.Since(r.t0)
	r.cpuEnd = srv.cpu()

	// The orders' own timestamps: what the worker did, independent of
	// polling and of how fast we submitted.
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	list, err := c.listAll(ctx, host, want)
	if err != nil {
		return nil, err
	}
	var bad int
	for _, x := range list {
		if x.Status != "succeeded" || x.StartedAt == nil || x.FinishedAt == nil {
			bad++
		}
	}
	if bad > 0 || len(list) != n {
		return nil, fmt.Errorf("backlog: %d of %d orders found, %d not succeeded", len(list), n, bad)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].StartedAt.Before(*list[j].StartedAt) })
	r.list = list
	return r, nil
}

// workerRate is orders per second from the first start to the last finish.
func (r *backlogRun) workerRate() float64 {
	d := r.list[len(r.list)-1].FinishedAt.Sub(*r.list[0].StartedAt)
	return float64(len(r.list)) / d.Seconds()
}

func backlog(ctx context.Context, c *client, srv *server, o options, rep *report, rawRate float64) error {
	progress(fmt.Sprintf("backlog: submitting %d orders of `true` to host %q from %d goroutines", o.backlog, o.backlogHost, o.submitters))
	r, err := runBacklog(ctx, c, srv, o.backlogHost, orderBody(o.backlogHost, "true"), o.backlog, o.submitters, o.pollInterval)
	if err != nil {
		return err
	}
	list, t0, submitted, observed := r.list, r.t0, r.submitted, r.observed
	cpu0, cpuSubmitted, cpu1 := r.cpu0, r.cpuSub, r.cpuEnd
	submitDur := submitted.Sub(t0)
	lastFinish := *list[len(list)-1].FinishedAt
	pipeline := lastFinish.Sub(t0)
	pipeRate := float64(o.backlog) / pipeline.Seconds()
	workerRate := r.workerRate()

	// Orders that started after the last submit was answered ran with no
	// submission load on the machine: the worker's own pace.
	var drain []orderResp
	for _, x := range list {
		if !x.StartedAt.Before(submitted) {
			drain = append(drain, x)
		}
	}
	var span, gap []time.Duration
	for i, x := range list {
		span = append(span, x.FinishedAt.Sub(*x.StartedAt))
		if i > 0 {
			gap = append(gap, x.StartedAt.Sub(*list[i-1].FinishedAt))
		}
	}
	var overlaps int
	for i := 1; i < len(list); i++ {
		if list[i].StartedAt.Before(*list[i-1].FinishedAt) {
			overlaps++
		}
	}

	rep.row("per-host backlog, end to end (first submit → last finished)", fmt.Sprintf("%.0f orders/s = %.1f %% of raw", pipeRate, 100*pipeRate/rawRate),
		"≥ 75 % of raw", ptr(pipeRate >= 0.75*rawRate))
	rep.row("per-host backlog, worker side (first started → last finished)", fmt.Sprintf("%.0f orders/s = %.1f %% of raw", workerRate, 100*workerRate/rawRate),
		"≥ 75 % of raw", ptr(workerRate >= 0.75*rawRate))
	rep.detail("pipeline cost per order above the exec", ms(time.Duration(float64(time.Second)*(1/workerRate-1/rawRate))),
		"1/worker-side rate − 1/raw rate")
	rep.detail("backlog submit phase", fmt.Sprintf("%d orders in %.2fs = %.0f/s", o.backlog, submitDur.Seconds(), float64(o.backlog)/submitDur.Seconds()),
		fmt.Sprintf("%d concurrent submitters, 202 each, while the worker already runs them", o.submitters))
	rep.detail("backlog drained (observed by polling)", fmt.Sprintf("%.2fs after the first submit", observed.Seconds()),
		"GET /v1/orders?status=queued,running every 20 ms")
	if len(drain) > 1 {
		d := drain[len(drain)-1].FinishedAt.Sub(*drain[0].StartedAt)
		r := float64(len(drain)) / d.Seconds()
		rep.detail("per-host rate with no submissions running", fmt.Sprintf("%.0f orders/s = %.1f %% of raw (%d orders)", r, 100*r/rawRate, len(drain)),
			"orders started after the last 202")
		rep.detail("worker-only CPU", cpuPerOrder(cpuSubmitted, cpu1, len(drain)), "after the last 202: worker, NATS, PostgreSQL (+ the 20 ms poll)")
	}
	rep.detail("per order: started_at → finished_at", durStats(span),
		"the claim's now() → the result's now(): started event, host policy, fork/exec/wait, group check; when the worker pipelines, also the commit of the previous result + this claim")
	rep.detail("between orders: finished_at → next started_at", durStats(gap),
		"result commit, ack, next delivery, claim; ≈ 0 when the result of N and the claim of N+1 share a transaction")
	rep.detail("backlog CPU", cpuPerOrder(cpu0, cpu1, o.backlog), "from /proc: submit + drain")
	rep.detail("strict order check", fmt.Sprintf("%d overlapping orders", overlaps), "by started_at/finished_at")
	progress(fmt.Sprintf("backlog: end to end %.0f orders/s, worker side %.0f orders/s (raw %.0f)", pipeRate, workerRate, rawRate))
	return nil
}

// listAll pages through GET /v1/orders?host= and returns the orders in want.
func (c *client) listAll(ctx context.Context, host string, want map[string]bool) ([]orderResp, error) {
	var out []orderResp
	cursor := ""
	for {
		path := "/v1/orders?host=" + host + "&limit=1000"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		code, b, err := c.do(ctx, http.MethodGet, path, nil)
		if err != nil {
			return nil, err
		}
		if code != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %d %s", path, code, b)
		}
		var l struct {
			Orders     []orderResp `json:"orders"`
			NextCursor *string     `json:"next_cursor"`
		}
		if err := json.Unmarshal(b, &l); err != nil {
			return nil, err
		}
		for _, x := range l.Orders {
			if want[x.ID] {
				out = append(out, x)
			}
		}
		if l.NextCursor == nil || len(out) == len(want) {
			return out, nil
		}
		cursor = *l.NextCursor
	}
}

// backlogSleep repeats the backlog with a command that takes 10 ms, to show
// how the fixed cost per order weighs on a command that does some work.
func backlogSleep(ctx context.Context, c *client, srv *server, o options, rep *report) error {
	n := o.sleepBacklog
	progress(fmt.Sprintf("backlog: raw rate of %d sequential `sleep 0.01`", n))
	t := time.Now()
	for i := 0; i < n; i++ {
		if err := exec.Command("sleep", "0.01").Run(); err != nil {
			return err
		}
	}
	raw := float64(n) / time.Since(t).Seconds()
	progress(fmt.Sprintf("backlog: submitting %d orders of `sleep 0.01`", n))
	r, err := runBacklog(ctx, c, srv, o.backlogHost, orderBody(o.backlogHost, "sleep", "0.01"), n, o.submitters, o.pollInterval)
	if err != nil {
		return err
	}
	w := r.workerRate()
	rep.detail("per-host backlog of a 10 ms command (`sleep 0.01`)", fmt.Sprintf("%.0f orders/s = %.1f %% of raw (%.0f/s); %s per order above the exec", w, 100*w/raw, raw,
		ms(time.Duration(float64(time.Second)*(1/w-1/raw)))), fmt.Sprintf("%d orders, worker side", n))
	progress(fmt.Sprintf("backlog: `sleep 0.01` %.0f orders/s = %.1f %% of raw %.0f/s", w, 100*w/raw, raw))
	return nil
}

// ---------------------------------------------------------------- latency

func latency(ctx context.Context, c *client, srv *server, o options, rep *report) error {
	cpu0 := srv.cpu()
	progress(fmt.Sprintf("latency: %d sequential POST ?wait=10 of `true`", o.latency))
	body := orderBody(o.backlogHost, "true")
	var total, queue, runS, outside []time.Duration
	for i := 0; i < o.latency; i++ {
		t := time.Now()
		code, or, err := c.submit(ctx, body, "?wait=10")
		d := time.Since(t)
		if err != nil {
			return fmt.Errorf("latency: %w", err)
		}
		if code != http.StatusOK || or.Status != "succeeded" || or.StartedAt == nil || or.FinishedAt == nil {
			return fmt.Errorf("latency: order %s answered %d with status %s", or.ID, code, or.Status)
		}
		total = append(total, d)
		queue = append(queue, or.StartedAt.Sub(or.SubmittedAt))
		runS = append(runS, or.FinishedAt.Sub(*or.StartedAt))
		outside = append(outside, d-or.FinishedAt.Sub(or.SubmittedAt))
	}
	cpu1 := srv.cpu()
	// Floors: an HTTP round trip to the API, and one that reads an order
	// from PostgreSQL, on the same keep-alive connection.
	var lastID string
	var healthz, get []time.Duration
	if n := len(total); n > 0 {
		_, or, err := c.submit(ctx, body, "?wait=10")
		if err != nil {
			return err
		}
		lastID = or.ID
	}
	for i := 0; i < 200; i++ {
		t := time.Now()
		if code, _, err := c.do(ctx, http.MethodGet, "/healthz", nil); err != nil || code != http.StatusOK {
			return fmt.Errorf("GET /healthz: %d %v", code, err)
		}
		healthz = append(healthz, time.Since(t))
		t = time.Now()
		if code, _, err := c.do(ctx, http.MethodGet, "/v1/orders/"+lastID, nil); err != nil || code != http.StatusOK {
			return fmt.Errorf("GET order: %d %v", code, err)
		}
		get = append(get, time.Since(t))
	}
	p50, p90, p99, mx := pct(total, 0.50), pct(total, 0.90), pct(total, 0.99), pct(total, 1)
	rep.row("idle submit-to-result latency p50 (POST ?wait=10, sequential)", ms(p50), "≤ 2 ms", ptr(p50 <= 2*time.Millisecond))
	rep.row("idle submit-to-result latency p99", ms(p99), "≤ 10 ms", ptr(p99 <= 10*time.Millisecond))
	rep.detail("idle latency p50 / p90 / p99 / max", fmt.Sprintf("%s / %s / %s / %s", ms(p50), ms(p90), ms(p99), ms(mx)),
		fmt.Sprintf("%d orders, keep-alive client", o.latency))
	rep.detail("latency CPU", cpuPerOrder(cpu0, cpu1, o.latency), "")
	rep.detail("floor: GET /healthz", durStats(healthz), "HTTP round trip on a keep-alive connection")
	rep.detail("floor: GET /v1/orders/{id}", durStats(get), "auth, one PostgreSQL read, JSON")
	rep.detail("… of which submitted_at → started_at", durStats(queue),
		"insert commit (fsync), JetStream publish (fsync) + PubAck, delivery to the worker, Claim start")
	rep.detail("… of which started_at → finished_at", durStats(runS), "as in the backlog")
	rep.detail("… of which outside submitted_at…finished_at", durStats(outside),
		"HTTP + auth + validation before the insert; Complete commit, finished event, GetOrder and JSON after")
	progress(fmt.Sprintf("latency: p50 %s p90 %s p99 %s max %s", ms(p50), ms(p90), ms(p99), ms(mx)))
	return nil
}

// ---------------------------------------------------------------- async

func asyncSubmit(ctx context.Context, c *client, srv *server, o options, rep *report) error {
	cpu0 := srv.cpu()
	progress(fmt.Sprintf("async: %d POSTs (202) from %d goroutines to host %q (no worker)", o.async, o.asyncWorkers, o.nowhereHost))
	body := orderBody(o.nowhereHost, "true")
	lat := make([]time.Duration, o.async)
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	t0 := time.Now()
	for g := 0; g < o.asyncWorkers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= o.async {
					return
				}
				t := time.Now()
				code, _, err := c.submit(ctx, body, "")
				if err == nil && code != http.StatusAccepted {
					err = fmt.Errorf("answered %d, not 202", code)
				}
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				lat[i] = time.Since(t)
			}
		}()
	}
	wg.Wait()
	d := time.Since(t0)
	cpu1 := srv.cpu()
	if firstErr != nil {
		return fmt.Errorf("async submit: %w", firstErr)
	}
	rate := float64(o.async) / d.Seconds()
	rep.row("async submit rate (202, no wait)", fmt.Sprintf("%.0f submits/s", rate), "≥ 5,000/s", ptr(rate >= 5000))
	rep.detail("async submit latency", durStats(lat), fmt.Sprintf("per POST with %d in flight", o.asyncWorkers))
	rep.detail("async submit CPU", cpuPerOrder(cpu0, cpu1, o.async), "")
	progress(fmt.Sprintf("async: %.0f submits/s (p50 %s)", rate, ms(pct(lat, 0.5))))
	return nil
}

// ---------------------------------------------------------------- stdout throughput

func streamThroughput(ctx context.Context, c *client, o options, rep *report) error {
	n := o.streamBytes
	size := strconv.FormatInt(n, 10)
	mibN := float64(n) / (1 << 20)
	progress(fmt.Sprintf("stdout: local baselines for %.0f MiB", mibN))
	devnull, err := timeCmd("sh", "-c", "head -c "+size+" /dev/zero > /dev/null")
	if err != nil {
		return err
	}
	viaCat, err := timeCmd("sh", "-c", "head -c "+size+" /dev/zero | cat > /dev/null")
	if err != nil {
		return err
	}
	pipeHash, err := pipeAndHash(n)
	if err != nil {
		return err
	}

	progress(fmt.Sprintf("stdout: order `head -c %s /dev/zero` with ?wait=120", size))
	t := time.Now()
	code, b, headers, err := c.doTimed(ctx, http.MethodPost, "/v1/orders?wait=120", orderBody(o.backlogHost, "head", "-c", size, "/dev/zero"))
	wall := time.Since(t)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("stdout order: %d %.300s", code, b)
	}
	var or orderResp
	if err := json.Unmarshal(b, &or); err != nil {
		return fmt.Errorf("decode stdout order: %w", err)
	}
	if or.Status != "succeeded" || or.Result == nil || or.Result.Stdout.Bytes != n {
		return fmt.Errorf("stdout order %s ended %s with %+v", or.ID, or.Status, or.Result)
	}
	execDur := time.Duration(or.Result.DurationMS) * time.Millisecond
	var span time.Duration
	if or.StartedAt != nil && or.FinishedAt != nil {
		span = or.FinishedAt.Sub(*or.StartedAt)
	}
	rate := func(d time.Duration) string {
		if d <= 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.0f MiB/s", mibN/d.Seconds())
	}
	rep.row(fmt.Sprintf("%.0f MiB stdout through an order (duration_ms)", mibN), fmt.Sprintf("%s (%d ms)", rate(execDur), or.Result.DurationMS),
		"vs local pipe: "+rate(viaCat), nil)
	rep.row(fmt.Sprintf("%.0f MiB stdout, wall time of POST ?wait=120", mibN), fmt.Sprintf("%s (%.2fs)", rate(wall), wall.Seconds()), "", nil)
	rep.detail("local: head > /dev/null", fmt.Sprintf("%s (%.0f ms)", rate(devnull), ms64(devnull)), "sh -c; no copy at all, an upper bound")
	rep.detail("local: head \\| cat > /dev/null", fmt.Sprintf("%s (%.0f ms)", rate(viaCat), ms64(viaCat)), "one pipe, one reader")
	rep.detail("local: head → pipe → Go reader + SHA-256", fmt.Sprintf("%s (%.0f ms)", rate(pipeHash), ms64(pipeHash)), "what the worker's capture does, in the bench process")
	rep.detail("stdout order: started_at → finished_at", fmt.Sprintf("%s (%.0f ms)", rate(span), ms64(span)), "adds storing the 10 MiB kept output in PostgreSQL")
	if or.FinishedAt != nil {
		rep.detail("stdout order: finished_at → response headers → last byte", fmt.Sprintf("%.0f ms → %.0f ms", ms64(t.Add(headers).Sub(*or.FinishedAt)), ms64(t.Add(wall).Sub(*or.FinishedAt))),
			"Complete commit, finished event, GetOrder of the 10 MiB, JSON encoding (whole body buffered before the headers), transfer")
	}
	rep.detail("stdout order: response body", fmt.Sprintf("%.1f MiB of JSON (truncated: %v)", float64(len(b))/(1<<20), or.Result.Stdout.Truncated),
		"10 MiB kept (head + tail); sent as base64 (text with NUL bytes switches to base64)")
	progress(fmt.Sprintf("stdout: order %s exec, %s wall; local pipe %s", rate(execDur), rate(wall), rate(viaCat)))
	return nil
}

func timeCmd(name string, args ...string) (time.Duration, error) {
	t := time.Now()
	if err := exec.Command(name, args...).Run(); err != nil {
		return 0, fmt.Errorf("%s %v: %w", name, args, err)
	}
	return time.Since(t), nil
}

func pipeAndHash(n int64) (time.Duration, error) {
	t := time.Now()
	cmd := exec.Command("head", "-c", strconv.FormatInt(n, 10), "/dev/zero")
	h := sha256.New()
	var count int64
	cmd.Stdout = writerFunc(func(p []byte) (int, error) {
		h.Write(p)
		count += int64(len(p))
		return len(p), nil
	})
	if err := cmd.Run(); err != nil {
		return 0, err
	}
	if count != n {
		return 0, fmt.Errorf("read %d bytes, want %d", count, n)
	}
	return time.Since(t), nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// ---------------------------------------------------------------- SSE

var stampRE = regexp.MustCompile(`\b1[0-9]{18}\b`)

// sseFirstByte measures live output over SSE two ways, following each
// order to its end so the next one does not queue behind it:
//
//   - live: `sh -c 'sleep 0.1; date +%s%N; sleep 0.1'` writes once the
//     stream is surely open, and prints its own clock, so the latency from
//     the command's write to the client's read is measured directly;
//   - immediate: `sh -c 'date +%s%N; sleep 0.1'` writes as soon as it
//     starts, with the stream opened right after the 202: the first byte as
//     a client that submits and follows sees it (the chunk may then come
//     from the replay rather than live).
func sseFirstByte(ctx context.Context, c *client, o options, rep *report) error {
	progress(fmt.Sprintf("sse: %d live and %d immediate runs followed over GET /v1/orders/{id}/events", o.sseRuns, o.sseRuns))
	var live, fromSubmit, immWrite []time.Duration
	for i := 0; i < 2*o.sseRuns; i++ {
		immediate := i%2 == 1
		script := "sleep 0.1; date +%s%N; sleep 0.1"
		if immediate {
			script = "date +%s%N; sleep 0.1"
		}
		t0 := time.Now()
		_, or, err := c.submit(ctx, orderBody(o.backlogHost, "sh", "-c", script), "")
		if err != nil {
			return fmt.Errorf("sse: %w", err)
		}
		r, err := followSSE(ctx, c, or.ID)
		if err != nil {
			return fmt.Errorf("sse: %w", err)
		}
		if r.status == http.StatusNotFound {
			rep.row("SSE first-byte latency (command write → client read)", "pending: GET /v1/orders/{id}/events answered 404", "", nil)
			progress("sse: the endpoint answers 404; reported as pending")
			// Let the order finish so serve stops promptly.
			time.Sleep(300 * time.Millisecond)
			return nil
		}
		if r.status != http.StatusOK {
			return fmt.Errorf("sse: GET events answered %d: %s", r.status, r.body)
		}
		if r.stdoutAt.IsZero() || r.stamp.IsZero() {
			return fmt.Errorf("sse: no stdout event with the timestamp for order %s (events seen: %v)", or.ID, r.seen)
		}
		if immediate {
			fromSubmit = append(fromSubmit, r.stdoutAt.Sub(t0))
			immWrite = append(immWrite, r.stdoutAt.Sub(r.stamp))
		} else {
			live = append(live, r.stdoutAt.Sub(r.stamp))
		}
	}
	rep.row("SSE first-byte latency, live (command write → client read), median", ms(pct(live, 0.5)), "", nil)
	rep.detail("SSE live: command write → client read", durStats(live),
		"`sleep 0.1; date +%s%N; …`: the command prints its own clock; same machine")
	rep.detail("SSE immediate: POST → first stdout event read", durStats(fromSubmit),
		"`date +%s%N; …` with the stream opened right after the 202: submit, queue, claim, start, write, NATS, SSE")
	rep.detail("SSE immediate: command write → client read", durStats(immWrite), "includes opening the stream when the write came first")
	progress(fmt.Sprintf("sse: live write → read median %s; immediate: submit → read median %s", ms(pct(live, 0.5)), ms(pct(fromSubmit, 0.5))))
	return nil
}

type sseResult struct {
	status              int
	body                string
	startedAt, stdoutAt time.Time
	stamp               time.Time
	seen                []string
}

func followSSE(ctx context.Context, c *client, id string) (sseResult, error) {
	var res sseResult
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/orders/"+id+"/events", nil)
	if err != nil {
		return res, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "text/event-stream")
	// Its own transport: an SSE stream is not returned to the pool.
	hc := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	res.status = resp.StatusCode
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		res.body = strings.TrimSpace(string(b))
		return res, nil
	}
	br := bufio.NewReader(resp.Body)
	event := "message"
	var data []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return res, nil
			}
			return res, err
		}
		now := time.Now()
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if len(data) > 0 || event != "message" {
				res.seen = append(res.seen, event)
				d := strings.Join(data, "\n")
				switch event {
				case "started":
					if res.startedAt.IsZero() {
						res.startedAt = now
					}
				case "stdout":
					if res.stdoutAt.IsZero() {
						res.stdoutAt = now
						res.stamp = findStamp(d)
					}
				case "finished":
					return res, nil
				}
			}
			event, data = "message", nil
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			data = append(data, strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		}
	}
}

// findStamp finds the nanosecond clock `date +%s%N` printed, in the event
// data as text or in any base64 string value of it.
func findStamp(data string) time.Time {
	try := func(s string) time.Time {
		if m := stampRE.FindString(s); m != "" {
			ns, _ := strconv.ParseInt(m, 10, 64)
			return time.Unix(0, ns)
		}
		return time.Time{}
	}
	if t := try(data); !t.IsZero() {
		return t
	}
	var v any
	if json.Unmarshal([]byte(data), &v) != nil {
		return time.Time{}
	}
	var walk func(any) time.Time
	walk = func(v any) time.Time {
		switch x := v.(type) {
		case string:
			if b, err := base64.StdEncoding.DecodeString(x); err == nil {
				return try(string(b))
			}
		case map[string]any:
			for _, e := range x {
				if t := walk(e); !t.IsZero() {
					return t
				}
			}
		case []any:
			for _, e := range x {
				if t := walk(e); !t.IsZero() {
					return t
				}
			}
		}
		return time.Time{}
	}
	return walk(v)
}

// ---------------------------------------------------------------- stats

func pct(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func durStats(d []time.Duration) string {
	if len(d) == 0 {
		return "n/a"
	}
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return fmt.Sprintf("mean %s, p50 %s, p99 %s, max %s", ms(sum/time.Duration(len(d))), ms(pct(d, 0.5)), ms(pct(d, 0.99)), ms(pct(d, 1)))
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", ms64(d))
}

func ms64(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }
