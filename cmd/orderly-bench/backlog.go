package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// backlogRun is one backlog: orders submitted without waiting, drained by
// the host's worker, with their own timestamps.
type backlogRun struct {
	t0, submitted        time.Time
	cpu0, cpuSub, cpuEnd cpuSample
	observed             time.Duration
	polls                int // the drain's polls
	// walSub is PostgreSQL's mark once the last 202 was answered, taken
	// at walSubAt: what was written after it is the drain's alone.
	walSub   walMark
	walSubAt time.Time
	list     []orderResp // sorted by started_at
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
	r.walSub, r.walSubAt = markWAL(ctx, srv.dsn), time.Now()
	if firstErr != nil {
		return nil, fmt.Errorf("backlog submit: %w", firstErr)
	}
	submitDur := r.submitted.Sub(r.t0)
	progress(fmt.Sprintf("backlog: submitted in %.2fs (%.0f/s); waiting for the worker to drain it", submitDur.Seconds(), float64(n)/submitDur.Seconds()))

	// Drained when no order of the host is queued or running. The poll
	// is a request and a listing in serve and its PostgreSQL, beside the
	// worker it measures on two cores (11 % of serve's samples at every
	// 20 ms, docs/benchmarks.md): its wait doubles up to drainPollMax.
	// The worker-side figures come from the orders' own timestamps; only
	// the observed drain is the later for it.
	path := "/v1/orders?host=" + host + "&status=queued,running&limit=1"
	lastLog := time.Now()
	for wait := poll; ; wait = min(2*wait, max(poll, drainPollMax)) {
		r.polls++
		var l struct {
			Orders []json.RawMessage `json:"orders"`
		}
		if err := c.getJSON(ctx, path, &l); err != nil {
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
		time.Sleep(wait)
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

// drainPollMax bounds the wait between two polls of a backlog's drain.
const drainPollMax = 320 * time.Millisecond

// workerRate is orders per second from the first start to the last finish.
func (r *backlogRun) workerRate() float64 {
	d := r.list[len(r.list)-1].FinishedAt.Sub(*r.list[0].StartedAt)
	return float64(len(r.list)) / d.Seconds()
}

func backlog(ctx context.Context, c *client, srv *server, o options, rep *report, rawRate float64) error {
	progress(fmt.Sprintf("backlog: submitting %d orders of `true` to host %q from %d goroutines", o.backlog, o.backlogHost, o.submitters))
	wal0 := markWAL(ctx, srv.dsn)
	r, err := runBacklog(ctx, c, srv, o.backlogHost, orderBody(o.backlogHost, "true"), o.backlog, o.submitters, o.pollInterval)
	if err != nil {
		return err
	}
	wal1 := markWAL(ctx, srv.dsn)
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
	rep.detail("backlog drained (observed by polling)", fmt.Sprintf("%.2fs after the first submit, %d polls", observed.Seconds(), r.polls),
		fmt.Sprintf("GET /v1/orders?status=queued,running, %v apart at first, doubling up to %v", o.pollInterval, drainPollMax))
	if len(drain) > 1 {
		d := drain[len(drain)-1].FinishedAt.Sub(*drain[0].StartedAt)
		r := float64(len(drain)) / d.Seconds()
		rep.detail("per-host rate with no submissions running", fmt.Sprintf("%.0f orders/s = %.1f %% of raw (%d orders)", r, 100*r/rawRate, len(drain)),
			"orders started after the last 202")
		rep.detail("worker-only CPU", cpuPerOrder(cpuSubmitted, cpu1, len(drain)), "after the last 202: worker, NATS, PostgreSQL (+ the 20 ms poll)")
	}
	rep.detail("per order: started_at → finished_at", durStats(span),
		"the claim's now() → the result's now(): started event, host policy, fork/exec/wait, group check; when the worker pipelines, also the commit of the previous result + this claim, and the wait for the next delivery")
	rep.detail("between orders: finished_at → next started_at", durStats(gap),
		"result commit, ack, next delivery, claim; ≈ 0 when the result of N and the claim of N+1 share a transaction")
	rep.detail("backlog CPU", cpuPerOrder(cpu0, cpu1, o.backlog), "from /proc: submit + drain")
	rep.detail("backlog PostgreSQL per order", walPerOrder(ctx, srv.dsn, wal0, wal1, o.backlog),
		"serve's PostgreSQL from the first submit to the drain's end (insert, claim, result and whatever else ran): pg_current_wal_insert_lsn, pg_stat_database.xact_commit (reads too: the drain's poll), transaction ids handed out (writes)")
	// The orders whose results were written after the last 202: their
	// drain's commits, with no insert of a submission among them.
	var late int
	for _, x := range list {
		if x.FinishedAt.After(r.walSubAt) {
			late++
		}
	}
	rep.detail("backlog PostgreSQL per order drained after the last 202", fmt.Sprintf("%s (%d orders)", writesPerOrder(r.walSub, wal1, late), late),
		"transactions that wrote per order finished after the last 202: the worker's result with the next claim (floor 1), the API's periodic jobs")
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
		var l struct {
			Orders     []orderResp `json:"orders"`
			NextCursor *string     `json:"next_cursor"`
		}
		if err := c.getJSON(ctx, path, &l); err != nil {
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
