package main

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
)

// The bounds every fault scenario is held to.
const (
	// recoveryBound is how long after a fault (or after a crashed
	// dependency is back) the host may take to start its next order: a
	// lease expiry (2 s here) and a restart, well under the 30 s ack wait.
	recoveryBound = 10 * time.Second
	// drainBound is how long after the load stops every recorded order
	// may take to become terminal.
	drainBound = 60 * time.Second
)

// faultEvent is one injected fault, or a crashed dependency coming back,
// from which recovery on host is measured.
type faultEvent struct {
	what string
	host string
	at   time.Time
}

// pgOrder is an order row as PostgreSQL records it.
type pgOrder struct {
	id       uuid.UUID
	host     string
	status   string
	tag      string
	seq      *int64
	attempt  int
	started  *time.Time
	finished *time.Time
	err      string
	worker   string
}

// rows reads every order of the test's database. The tag is the order's
// fourth argument (sh -c script _ tag …), or for an order without
// arguments (a runbook's) its correlation id.
func (s *faultStack) rows(ctx context.Context) ([]pgOrder, error) {
	rs, err := s.pool.Query(ctx, `SELECT id, host, status, coalesce(args[4], nullif(correlation_id, ''), ''), stream_seq, attempt,
		coalesce(error, ''), worker, started_at, finished_at FROM orders`)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []pgOrder
	for rs.Next() {
		var o pgOrder
		if err := rs.Scan(&o.id, &o.host, &o.status, &o.tag, &o.seq, &o.attempt, &o.err, &o.worker, &o.started, &o.finished); err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, rs.Err()
}

// killedInstances returns the worker instances the test SIGKILLed, read
// from each killed worker's log ("instance=<host>/<uuid>").
func (s *faultStack) killedInstances() map[string]bool {
	s.mu.Lock()
	workers := append([]*faultWorker(nil), s.workers...)
	s.mu.Unlock()
	out := map[string]bool{}
	for _, w := range workers {
		if !w.killed.Load() {
			continue
		}
		b, err := os.ReadFile(w.log)
		if err != nil {
			continue
		}
		if m := instanceRE.FindSubmatch(b); m != nil {
			out[string(m[1])] = true
		}
	}
	return out
}

var instanceRE = regexp.MustCompile(`instance=(\S+)`)

// processRecorded returns the orders whose interrupted attempt had its
// process on record, from the successor's "reaped" events.
func (s *faultStack) processRecorded(ctx context.Context) (map[uuid.UUID]bool, error) {
	rs, err := s.pool.Query(ctx, `SELECT DISTINCT order_id FROM order_events
		WHERE type = 'reaped' AND detail->>'process_recorded' = 'true'`)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	out := map[uuid.UUID]bool{}
	for rs.Next() {
		var id uuid.UUID
		if err := rs.Scan(&id); err != nil {
			return nil, err
		}
		out[id] = true
	}
	return out, rs.Err()
}

// terminalHistory returns, per order, the terminal statuses its history
// records, in the order they were written. Every statement that ends an
// order writes its event in the same statement, so an order whose
// terminal status changed after it ended (DESIGN §2: "Terminal statuses
// never change again") has two; the final rows alone cannot show it (an
// order that succeeded and was then marked interrupted by a successor
// looks like any interrupted one).
func (s *faultStack) terminalHistory(ctx context.Context) (map[uuid.UUID][]string, error) {
	rs, err := s.pool.Query(ctx, `SELECT order_id, array_agg(status ORDER BY id) FROM order_events
		WHERE status IN ('succeeded', 'failed', 'timed_out', 'killed', 'canceled', 'interrupted', 'rejected', 'expired')
		GROUP BY order_id`)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	out := map[uuid.UUID][]string{}
	for rs.Next() {
		var id uuid.UUID
		var st []string
		if err := rs.Scan(&id, &st); err != nil {
			return nil, err
		}
		out[id] = st
	}
	return out, rs.Err()
}

// requeues returns how many times each order was requeued after its
// worker vanished (its "requeued" events; a hand-back is "unclaimed").
func (s *faultStack) requeues(ctx context.Context) (map[uuid.UUID]int, error) {
	rs, err := s.pool.Query(ctx, `SELECT order_id, count(*) FROM order_events WHERE type = 'requeued' GROUP BY order_id`)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	out := map[uuid.UUID]int{}
	for rs.Next() {
		var id uuid.UUID
		var n int
		if err := rs.Scan(&id, &n); err != nil {
			return nil, err
		}
		out[id] = n
	}
	return out, rs.Err()
}

// waitDrained waits up to d for every order to be terminal and reports
// how long it took (d when it did not happen; the check then lists them).
func (s *faultStack) waitDrained(d time.Duration) time.Duration {
	began := time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for time.Since(began) < d {
		var n int
		err := s.pool.QueryRow(s.t.Context(), `SELECT count(*) FROM orders WHERE status IN ('queued','running')`).Scan(&n)
		if err == nil && n == 0 {
			return time.Since(began)
		}
		<-tick.C
	}
	return d
}

// waitSubmitStreamEmpty waits up to d for the API's intake to have taken
// every NATS submission out of ORDERLY_SUBMIT (a work queue: what it
// acked is gone), so that each is in PostgreSQL before the check.
func (s *faultStack) waitSubmitStreamEmpty(d time.Duration) {
	nc, err := nats.Connect(s.natsURL, s.apiNATS()...)
	if err != nil {
		s.t.Errorf("connect to read ORDERLY_SUBMIT: %v", err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		s.t.Errorf("jetstream: %v", err)
		return
	}
	began := time.Now()
	for time.Since(began) < d {
		if st, err := js.Stream(s.t.Context(), queue.SubmitStream); err == nil && st.CachedInfo().State.Msgs == 0 {
			return
		}
		pause(s.t.Context(), 100*time.Millisecond)
	}
	s.t.Logf("ORDERLY_SUBMIT still holds submissions after %s", d)
}

// contractReport collects invariant violations, each with the ids and
// tags needed to look them up.
type contractReport struct {
	names    []string
	problems map[string][]string
}

// The invariants, in the order they are reported.
const (
	invLost      = "lost (accepted or recorded, not terminal, or interrupted without having run)"
	invDuplicate = "duplicate executions"
	invOrder     = "order violations"
	invSettle    = "late settlements (an interrupted order settled after a later order of its host started)"
	invOverlap   = "overlaps (an order started while an earlier one's processes ran)"
	invOrphan    = "orphaned processes"
	invOutcome   = "unexpected outcomes"
	invTerminal  = "terminal statuses changed (an order ended twice in its history, or its row says otherwise)"
	invHTTP      = "answers 5xx other than 503"
	invRecovery  = "recovery over the bound"
)

func newContractReport() *contractReport {
	r := &contractReport{problems: map[string][]string{}}
	r.names = []string{invLost, invDuplicate, invOrder, invSettle, invOverlap, invOrphan, invOutcome, invTerminal, invHTTP, invRecovery}
	return r
}

func (r *contractReport) add(inv, format string, args ...any) {
	r.problems[inv] = append(r.problems[inv], fmt.Sprintf(format, args...))
}

// checkContract checks, from outside, every invariant of DESIGN §2 after a
// fault scenario: from the client's record of submissions (l), the marker
// files, PostgreSQL and /proc. It fails t once per broken invariant, with
// the first violations in full.
func checkContract(t *testing.T, s *faultStack, l *faultLoad, faults []faultEvent) {
	t.Helper()
	for _, tl := range l.tails {
		tl.poll()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := s.rows(ctx)
	if err != nil {
		t.Fatalf("read orders: %v", err)
	}
	subs := l.snapshot()
	r := newContractReport()

	rowByTag := map[string]pgOrder{}
	rowsOfTag := map[string]int{}
	for _, o := range rows {
		rowByTag[o.tag] = o
		rowsOfTag[o.tag]++
	}
	subByTag := map[string]faultOrder{}
	codes := map[int]int{}
	for _, o := range subs {
		subByTag[o.tag] = o
		codes[o.code]++
	}
	starts, ends := map[string]int{}, map[string]int{}
	startOrder := map[string][]markerLine{} // host → first start of each tag, in order
	allStarts := map[string][]string{}      // host → every start's tag, in order
	for host, tl := range l.tails {
		for _, ml := range tl.snapshot() {
			if !ml.start {
				ends[ml.tag]++
				continue
			}
			starts[ml.tag]++
			allStarts[host] = append(allStarts[host], ml.tag)
			if starts[ml.tag] == 1 {
				startOrder[host] = append(startOrder[host], ml)
			}
			if ml.busy {
				r.add(invOverlap, "host %s: %s (order %s) started while the host's lock was held by an earlier order's processes",
					host, ml.tag, rowByTag[ml.tag].id)
			}
		}
	}
	describe := func(tag string) string {
		o := rowByTag[tag]
		seq := "-"
		if o.seq != nil {
			seq = fmt.Sprint(*o.seq)
		}
		return fmt.Sprintf("%s (order %s, stream_seq %s, status %s, attempt %d, worker %s)", tag, o.id, seq, o.status, o.attempt, o.worker)
	}

	// Lost: every recorded order terminal; every accepted order recorded;
	// interrupted only after it started: its marker shows it, or the
	// successor found the attempt's process on record (an order killed
	// between its fork and its first line did start).
	recorded, err := s.processRecorded(ctx)
	if err != nil {
		t.Fatalf("read reap evidence: %v", err)
	}
	var earlyKills, unknownStarts []string
	killed := s.killedInstances()
	// Orders whose worker was SIGKILLed before it recorded their process:
	// the documented window (docs/decisions.md, "Known limit").
	unrecorded := map[string]bool{}
	for _, o := range rows {
		if o.status == "interrupted" && !recorded[o.id] && killed[o.worker] {
			unrecorded[o.tag] = true
		}
		switch {
		case o.status == "queued" || o.status == "running":
			r.add(invLost, "%s still %s %s after the load stopped", describe(o.tag), o.status, drainBound)
		case o.status == "interrupted" && starts[o.tag] == 0 && recorded[o.id]:
			// The worker recorded the attempt's process (after the fork), so
			// the order did start; it was killed before its first line.
			earlyKills = append(earlyKills, o.tag)
		case o.status == "interrupted" && starts[o.tag] == 0 && killed[o.worker]:
			// The documented window (docs/decisions.md, "Known limit"): a
			// worker SIGKILLed between its claim commit and its process
			// record leaves a start nobody can prove either way; the order
			// says so (process_recorded false) and never runs again.
			unknownStarts = append(unknownStarts, o.tag)
		case o.status == "interrupted" && starts[o.tag] == 0:
			r.add(invLost, "%s interrupted without having started and with no process recorded (%s)", describe(o.tag), o.err)
		}
	}
	if len(unknownStarts) > 0 {
		t.Logf("%d orders interrupted with their start unknown (their worker was SIGKILLed between claim and process record): %v",
			len(unknownStarts), unknownStarts)
	}
	for _, o := range subs {
		if _, ok := rowByTag[o.tag]; o.accepted() && !ok {
			r.add(invLost, "%s accepted (202, id %s) but not in PostgreSQL", o.tag, o.id)
		}
	}
	// Duplicates: one row per submission (a retry with its Idempotency-Key
	// names the first one), and one start per order.
	for tag, n := range rowsOfTag {
		if n > 1 {
			r.add(invDuplicate, "%s recorded %d times", describe(tag), n)
		}
	}
	// An idempotent order a successor requeued (its "requeued" event)
	// may start twice: again at once, in its place, before any other
	// order of its host starts (DESIGN §2.2). Only an idempotent one is
	// requeued, and only once.
	requeues, err := s.requeues(ctx)
	if err != nil {
		t.Fatalf("read requeue events: %v", err)
	}
	for _, o := range rows {
		if n := requeues[o.id]; n > 1 || n == 1 && !subByTag[o.tag].idempotent {
			r.add(invDuplicate, "%s requeued %d times (idempotent: %v)", describe(o.tag), n, subByTag[o.tag].idempotent)
		}
	}
	var requeued []string
	for tag, n := range starts {
		if n == 2 && requeues[rowByTag[tag].id] == 1 {
			requeued = append(requeued, tag)
			continue
		}
		if n > 1 {
			r.add(invDuplicate, "%s started %d times", describe(tag), n)
		}
	}
	for _, tag := range requeued {
		host := subByTag[tag].host
		first := slices.Index(allStarts[host], tag)
		second := first + 1 + slices.Index(allStarts[host][first+1:], tag)
		if between := allStarts[host][first+1 : second]; len(between) > 0 {
			r.add(invOrder, "host %s: %s, requeued, started again only after %v had started", host, describe(tag), between[:min(len(between), 5)])
		}
	}
	if len(requeued) > 0 {
		slices.Sort(requeued)
		t.Logf("%d idempotent orders requeued and started again: %v", len(requeued), requeued)
	}
	// Order: per host, the starts of one submitter's accepted orders follow
	// its submission order, and all accepted starts follow stream order.
	for host, lines := range startOrder {
		last := map[string]faultOrder{}
		var maxSeq int64 = -1
		maxTag := ""
		for _, ml := range lines {
			o, ok := subByTag[ml.tag]
			if !ok || !o.accepted() {
				continue
			}
			if prev, ok := last[o.submitter]; ok && o.n < prev.n {
				r.add(invOrder, "host %s: %s started after %s, which the same client submitted later", host, describe(o.tag), describe(prev.tag))
			}
			if prev, ok := last[o.submitter]; !ok || o.n > prev.n {
				last[o.submitter] = o
			}
			if seq := rowByTag[ml.tag].seq; seq != nil {
				if *seq < maxSeq {
					r.add(invOrder, "host %s: %s started after %s, later in the stream", host, describe(ml.tag), describe(maxTag))
				} else {
					maxSeq, maxTag = *seq, ml.tag
				}
			}
		}
	}
	checkPublishOrder(r, subs, rowByTag, describe)
	checkSettlement(r, rows, describe)
	history, err := s.terminalHistory(ctx)
	if err != nil {
		t.Fatalf("read terminal events: %v", err)
	}
	for _, o := range rows {
		switch h := history[o.id]; {
		case len(h) > 1:
			r.add(invTerminal, "%s ended %d times: %v", describe(o.tag), len(h), h)
		case len(h) == 1 && h[0] != o.status:
			r.add(invTerminal, "%s: its history ended it %s", describe(o.tag), h[0])
		}
	}
	// Orphans: processes of orders still alive once every order is
	// terminal: their shells (the marker path in their argv), the
	// children they spawn (the child's pattern), and every other process
	// of them, found by the order's environment whatever its argv,
	// parent or session (faultOrderEnv).
	childOf := map[string]string{}
	for _, o := range subs {
		if o.child != "" {
			childOf[o.child] = o.tag
		}
	}
	leftovers := procsWithArgs(l.childPattern())
	for _, h := range l.hosts {
		leftovers = append(leftovers, procsWithArgs(l.marker(h))...)
	}
	leftovers = append(leftovers, procsWithEnv(faultOrderEnv, l.envTag("*"))...)
	// A process left by an unrecorded order is in the same window as
	// unknownStarts: nobody can know which processes to reap. Reported,
	// not counted (the cleanup kills it).
	var unrecordedLeft []string
	slices.Sort(leftovers)
	for _, pid := range slices.Compact(leftovers) {
		argv := procArgs(pid)
		if argv == nil {
			continue // it ended between the scan and this read: not left
		}
		tag := ""
		for i, a := range argv {
			if t, ok := childOf[a]; ok {
				tag = t
			}
			if i == 3 && argv[0] == "sh" {
				tag = a // sh -c script _ tag …
			}
		}
		if tag == "" {
			tag = l.envTagOf(pid)
		}
		shown := argv
		if len(shown) > 0 && shown[0] == "sh" {
			shown = []string{"sh -c <order script> _", tag}
		}
		if unrecorded[tag] {
			unrecordedLeft = append(unrecordedLeft, fmt.Sprintf("pid %d of %s", pid, tag))
			continue
		}
		r.add(invOrphan, "pid %d (%s) of %s", pid, strings.Join(shown, " "), describe(tag))
	}
	if len(unrecordedLeft) > 0 {
		t.Logf("%d processes left by orders whose worker was SIGKILLed before recording them (the known limit): %v",
			len(unrecordedLeft), unrecordedLeft)
	}
	// Outcomes: an accepted order succeeds having run once, or is
	// interrupted; nothing else is expected of these orders.
	for _, o := range rows {
		sub, ok := subByTag[o.tag]
		if !ok || !sub.accepted() {
			continue
		}
		switch {
		case o.status == "succeeded" && requeues[o.id] == 1:
			// The lost attempt may have ended (its result unwritten) or
			// not, or not have started at all.
			if st, en := starts[o.tag], ends[o.tag]; st > 2 || en < 1 || en > st {
				r.add(invOutcome, "%s succeeded after a requeue but its marker shows %d starts, %d ends", describe(o.tag), st, en)
			}
		case o.status == "succeeded" && (starts[o.tag] != 1 || ends[o.tag] != 1):
			r.add(invOutcome, "%s succeeded but its marker shows %d starts, %d ends", describe(o.tag), starts[o.tag], ends[o.tag])
		case o.status != "succeeded" && o.status != "interrupted" && o.status != "queued" && o.status != "running":
			r.add(invOutcome, "%s: error %q", describe(o.tag), o.err)
		}
	}
	for _, o := range subs {
		// A 200 is the finished order: terminal, and the one PostgreSQL
		// holds (a ?wait must not answer before the result is recorded).
		if o.code == http.StatusOK {
			if row, ok := rowByTag[o.tag]; o.status != row.status || (o.status != "succeeded" && o.status != "interrupted") {
				r.add(invOutcome, "%s answered 200 with status %q; PostgreSQL has %s (found %v)", describe(o.tag), o.status, row.status, ok)
			}
		}
		// A ?wait=10 answers 202 only when its wait ran out: not early,
		// for an order that then finished well within it.
		if row, ok := rowByTag[o.tag]; o.wait && o.code == http.StatusAccepted && ok && row.finished != nil &&
			row.finished.Before(o.lastSent.Add(8*time.Second)) && o.answered.Before(o.lastSent.Add(8*time.Second)) {
			r.add(invOutcome, "%s: ?wait=10 answered 202 %s after it was sent, and the order finished %s after",
				describe(o.tag), o.answered.Sub(o.lastSent).Round(time.Millisecond), row.finished.Sub(o.lastSent).Round(time.Millisecond))
		}
		if o.code >= 500 && o.code != http.StatusServiceUnavailable {
			r.add(invHTTP, "%s to host %s answered %d: %s", o.tag, o.host, o.code, o.err)
		}
	}
	// Recovery.
	var measured []string
	for _, f := range faults {
		tl := l.tails[f.host]
		next, ok := tl.firstStartAfter(f.at)
		if !ok {
			r.add(invRecovery, "%s on %s at %s: no order started on the host afterwards", f.what, f.host, f.at.Format("15:04:05.000"))
			measured = append(measured, fmt.Sprintf("%s/%s: never", f.what, f.host))
			continue
		}
		d := next.at.Sub(f.at)
		measured = append(measured, fmt.Sprintf("%s/%s: %s", f.what, f.host, d.Round(10*time.Millisecond)))
		if d > recoveryBound {
			r.add(invRecovery, "%s on %s: next order %s started %s later (bound %s)", f.what, f.host, describe(next.tag), d.Round(10*time.Millisecond), recoveryBound)
		}
	}

	statuses := map[string]int{}
	for _, o := range rows {
		statuses[o.status]++
	}
	t.Logf("contract check: %d submissions (HTTP status counts %v), %d orders in PostgreSQL %v, recovery %v",
		len(subs), codes, len(rows), statuses, measured)
	t.Logf("longest idle gaps (a host started nothing after an order's end while an accepted order waited): %s", formatGaps(longestIdleGaps(l, 5)))
	var summary []string
	for _, name := range r.names {
		summary = append(summary, fmt.Sprintf("%s=%d", strings.Fields(name)[0], len(r.problems[name])))
	}
	t.Logf("invariants: %s", strings.Join(summary, " "))
	if len(earlyKills) > 0 {
		t.Logf("interrupted before their first line, process on record: %v", earlyKills)
	}
	for _, name := range r.names {
		p := r.problems[name]
		if len(p) == 0 {
			continue
		}
		shown := p[:min(len(p), 15)]
		more := ""
		if len(p) > len(shown) {
			more = fmt.Sprintf("\n    … and %d more", len(p)-len(shown))
		}
		t.Errorf("%d %s:\n    %s%s", len(p), name, strings.Join(shown, "\n    "), more)
	}
}

// checkPublishOrder: when one accepted order's 202 arrived before another
// of the same host was sent, the first is earlier in the stream, whoever
// submitted them. A NATS submission's 202 is JetStream's ack of it in
// ORDERLY_SUBMIT: it comes before the intake records the order, so it
// orders the submission before later NATS submissions (one intake, taking
// them in turn) but not before a later REST one, which the API may record
// first.
func checkPublishOrder(r *contractReport, subs []faultOrder, rowByTag map[string]pgOrder, describe func(string) string) {
	byHost := map[string][]faultOrder{}
	for _, o := range subs {
		if o.accepted() && rowByTag[o.tag].seq != nil {
			byHost[o.host] = append(byHost[o.host], o)
		}
	}
	seq := func(o *faultOrder) int64 { return *rowByTag[o.tag].seq }
	for host, list := range byHost {
		answered := slices.Clone(list)
		slices.SortFunc(answered, func(a, b faultOrder) int { return a.answered.Compare(b.answered) })
		sent := slices.Clone(list)
		slices.SortFunc(sent, func(a, b faultOrder) int { return a.sent.Compare(b.sent) })
		// Sweep by send time, keeping the latest stream position among the
		// orders already answered, for each intake.
		var bestREST, bestNATS *faultOrder
		i := 0
		for _, b := range sent {
			for ; i < len(answered) && answered[i].answered.Before(b.sent); i++ {
				best := &bestREST
				if answered[i].nats {
					best = &bestNATS
				}
				if *best == nil || cmp.Compare(seq(&answered[i]), seq(*best)) > 0 {
					*best = &answered[i]
				}
			}
			for _, best := range []*faultOrder{bestREST, bestNATS} {
				if best == nil || best.nats && !b.nats {
					continue
				}
				if seq(&b) < seq(best) {
					r.add(invOrder, "host %s: %s is earlier in the stream than %s, whose 202 came before it was sent",
						host, describe(b.tag), describe(best.tag))
				}
			}
		}
	}
}

// checkSettlement: an order interrupted by a fault is settled before any
// later order of its host starts. A host whose crashed order stays
// "running" until an ack timer redelivers it has moved on without knowing
// what became of it.
func checkSettlement(r *contractReport, rows []pgOrder, describe func(string) string) {
	for _, x := range rows {
		if x.status != "interrupted" || x.seq == nil || x.finished == nil {
			continue
		}
		var late []string
		for _, y := range rows {
			if y.host == x.host && y.seq != nil && *y.seq > *x.seq && y.started != nil && y.started.Before(*x.finished) {
				late = append(late, y.tag)
			}
		}
		if len(late) > 0 {
			r.add(invSettle, "%s settled at %s, after %d later orders of the host had started, e.g. %v",
				describe(x.tag), x.finished.Format("15:04:05.000"), len(late), late[:min(len(late), 5)])
		}
	}
}

// procArgs is the argv of pid.
func procArgs(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}
