package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderly-run/orderly/internal/pgembed"
)

// failoverUnavailableBound is how long after the standby's promotion a
// submission may still be answered 503: the API's pool drops the dead
// primary's connections as each is used (a statement on one fails once)
// and connects to the promoted server, the DSN's next host. The window
// docs/reliability.md documents runs from the primary's death to this
// long after the promotion; nothing but 503 may be answered in it.
const failoverUnavailableBound = 5 * time.Second

// startStandby makes a streaming standby of primary in dir (pg_basebackup
// -R as the cluster's owner, so that it follows the primary over its unix
// socket) and starts it, hot: it answers reads, refuses writes, and
// target_session_attrs=read-write passes it over until it is promoted.
func startStandby(t testing.TB, primary *faultPG, dir string) *faultPG {
	t.Helper()
	p := &faultPG{t: t, dir: dir, binDir: primary.binDir}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	out, err := p.run("pg_basebackup", "-h", primary.runDir(), "-p", "5432", "-U", "postgres",
		"-D", filepath.Join(dir, "data"), "-R", "-X", "stream", "-c", "fast", "--no-sync")
	if err != nil {
		t.Fatalf("pg_basebackup: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	// Start finds PG_VERSION (no initdb) and standby.signal (a standby);
	// the orderly database came with the copy.
	p.srv, err = pgembed.Start(ctx, pgembed.Options{Dir: dir, BinDir: p.binDir, Database: "orderly", Fsync: false})
	if err != nil {
		t.Fatal(err)
	}
	stopGuard, err := guardCluster(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := p.srv.Stop(ctx); err != nil {
			t.Errorf("stop the standby: %v", err)
		}
		stopGuard()
	})
	return p
}

// runDir is the directory of the cluster's unix socket: its host in a
// connection string.
func (p *faultPG) runDir() string { return filepath.Join(p.dir, "run") }

// waitStreaming waits until the primary has a standby streaming in state
// (pg_stat_replication.sync_state: "sync", "async").
func (p *faultPG) waitStreaming(state string) {
	p.t.Helper()
	waitUntil(p.t, time.Minute, "a standby streaming "+state, func() bool {
		conn, err := pgx.Connect(p.t.Context(), p.dsn())
		if err != nil {
			return false
		}
		defer conn.Close(context.Background())
		var n int
		err = conn.QueryRow(p.t.Context(), `SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND sync_state = $1`, state).Scan(&n)
		return err == nil && n > 0
	})
}

// makeSynchronous has every commit of the primary wait for a standby's
// flush (synchronous_standby_names '*', synchronous_commit on): a commit
// acknowledged to a client is on both. Set with ALTER SYSTEM after the
// base backup, so that the standby, once promoted, does not wait for a
// standby of its own.
func (p *faultPG) makeSynchronous() {
	p.t.Helper()
	conn, err := pgx.Connect(p.t.Context(), p.dsn())
	if err != nil {
		p.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, q := range []string{`ALTER SYSTEM SET synchronous_standby_names = '*'`, `SELECT pg_reload_conf()`} {
		if _, err := conn.Exec(p.t.Context(), q); err != nil {
			p.t.Fatalf("%s: %v", q, err)
		}
	}
	p.waitStreaming("sync")
}

// promote ends the standby's recovery (pg_ctl promote, waiting until it
// accepts writes).
func (p *faultPG) promote() {
	p.t.Helper()
	out, err := p.ctl("promote", "-w", "-t", "60", "-D", filepath.Join(p.dir, "data"))
	if err != nil {
		p.t.Fatalf("pg_ctl promote: %v\n%s", err, out)
	}
}

// failoverDSN names the primary and then the standby as the hosts of one
// connection string, for a read-write session: what an operator with a
// streaming standby gives orderly, so that its processes follow a
// promotion without being told.
func failoverDSN(primary, standby *faultPG) string {
	return fmt.Sprintf("postgres://postgres@/orderly?host=%s,%s&port=5432&sslmode=disable&target_session_attrs=read-write",
		url.QueryEscape(primary.runDir()), url.QueryEscape(standby.runDir()))
}

// newFailoverStack is the fault stack on a primary with a streaming
// standby (synchronous or not), every process and the test's own pool
// given failoverDSN. It returns the standby; s.pg is the primary.
func newFailoverStack(t *testing.T, synchronous bool) (*faultStack, *faultPG) {
	t.Helper()
	return newFailoverStackDSN(t, synchronous, func(_ *faultStack, primary, standby *faultPG) string {
		return failoverDSN(primary, standby)
	})
}

// newFailoverStackDSN is newFailoverStack with the connection string
// dsn makes.
func newFailoverStackDSN(t *testing.T, synchronous bool, dsn func(s *faultStack, primary, standby *faultPG) string) (*faultStack, *faultPG) {
	t.Helper()
	var standby *faultPG
	s := newFaultStackWith(t, "ofo-", func(s *faultStack) string {
		s.pg = startFaultPG(t, s.dir)
		standby = startStandby(t, s.pg, filepath.Join(s.dir, "pg2"))
		if synchronous {
			s.pg.makeSynchronous()
		} else {
			s.pg.waitStreaming("async")
		}
		return dsn(s, s.pg, standby)
	}, func(s *faultStack) string {
		s.nats = startNATSServer(t, s.dir)
		return s.nats.url()
	}, nil)
	return s, standby
}

// failover kills the primary as a crash of its machine would (SIGKILL of
// the postmaster and every backend: each connection to it ends at once)
// and promotes the standby, as an operator or a failover manager does,
// and returns when the promoted server accepts writes: when the kill
// was sent, and when the promotion ended. thaw, when not nil, runs
// between the two (the standby stalled before the kill goes on).
func failover(r *faultRun, standby *faultPG, thaw func()) (killed, promoted time.Time) {
	r.t.Helper()
	killed = time.Now()
	r.s.pg.signal(syscall.SIGKILL)
	r.s.note("primary SIGKILLed")
	for _, h := range r.hosts {
		r.fault("primary killed", h)
	}
	if thaw != nil {
		thaw()
	}
	standby.promote()
	promoted = time.Now()
	r.s.note("standby promoted (%s after the kill)", promoted.Sub(killed).Round(time.Millisecond))
	return killed, promoted
}

// TestFaultsPostgresFailover kills PostgreSQL's primary (SIGKILL) under
// load from REST clients (with an Idempotency-Key, retried on a 503 or
// no answer) and NATS publishers, and promotes its synchronous standby
// (synchronous_standby_names '*': a commit acknowledged is on both);
// orderly's API and workers are given both servers as the hosts of one
// connection string with target_session_attrs=read-write, and follow the
// promotion on their own. Every accepted order must run once (one whose
// claim's commit answer was lost with the primary included: it is read
// back as this worker's and run, or claimed afresh, never dropped), in
// order, with no worker wedged, the hosts recovered within the bound,
// and nothing answered but 503 while no server takes writes.
func TestFaultsPostgresFailover(t *testing.T) {
	s, standby := newFailoverStack(t, true)
	var killed, promoted time.Time
	shape := faultLoadShape{submitters: 4, natsSubmitters: 2, period: 150 * time.Millisecond, retry: true, timeout: 10 * time.Second}
	r := runFaultScenarioLoad(t, s, map[string]int{"h1": 1, "h2": 1}, shape, func(r *faultRun) {
		pause(r.t.Context(), time.Second)
		// The standby stalls (SIGSTOP) for a second before the kill: the
		// commits of that second (inserts, claims, results) wait for its
		// flush, unanswered, when the primary dies. What the primary had
		// sent it is in its socket and is applied when it goes on: those
		// commits are on the promoted server though nobody was told, the
		// others are not; orderly must tell them apart.
		standby.signal(syscall.SIGSTOP)
		r.s.note("standby stalled")
		pause(r.t.Context(), time.Second)
		killed, promoted = failover(r, standby, func() { standby.signal(syscall.SIGCONT) })
	})
	t.Logf("standby promoted %s after the primary's kill", promoted.Sub(killed).Round(time.Millisecond))
	checkFailoverAnswers(t, r.l.answersSoFar(), killed, promoted)
	checkFollowedPromotion(t, s, standby, r.hosts)
	logDoubtfulCommits(t, s)
}

// TestFaultsPostgresFailoverByAddress is TestFaultsPostgresFailover
// with orderly given one address for PostgreSQL, which the operator
// moves from the primary to the standby (a DNS name, a virtual IP: here
// the socket's directory named through a symlink, replaced), and no
// target_session_attrs. The address moves right after the kill, before
// the promotion: connections made meanwhile reach a standby that still
// refuses writes (SQLSTATE 25006, read-only), which must be answered
// 503 like any outage and retried by the workers, and the same sessions
// write once it is promoted.
func TestFaultsPostgresFailoverByAddress(t *testing.T) {
	var addr, dsn string
	s, standby := newFailoverStackDSN(t, true, func(s *faultStack, primary, _ *faultPG) string {
		addr = filepath.Join(s.dir, "pgaddr")
		if err := os.Symlink(primary.runDir(), addr); err != nil {
			t.Fatal(err)
		}
		dsn = fmt.Sprintf("postgres://postgres@/orderly?host=%s&port=5432&sslmode=disable", url.QueryEscape(addr))
		return dsn
	})
	var killed, moved, promoted time.Time
	shape := faultLoadShape{submitters: 4, natsSubmitters: 2, period: 150 * time.Millisecond, retry: true, timeout: 10 * time.Second}
	r := runFaultScenarioLoad(t, s, map[string]int{"h1": 1, "h2": 1}, shape, func(r *faultRun) {
		pause(r.t.Context(), time.Second)
		standby.signal(syscall.SIGSTOP)
		r.s.note("standby stalled")
		pause(r.t.Context(), time.Second)
		killed, promoted = failover(r, standby, func() {
			standby.signal(syscall.SIGCONT)
			// Replaced in one rename, as a resolver's answer changes.
			next := addr + ".next"
			if err := os.Symlink(standby.runDir(), next); err != nil {
				r.t.Fatal(err)
			}
			if err := os.Rename(next, addr); err != nil {
				r.t.Fatal(err)
			}
			moved = time.Now()
			r.s.note("address moved to the standby")
			// Connections made now reach a standby still in recovery.
			conn, err := pgx.Connect(r.t.Context(), dsn)
			if err != nil {
				r.t.Fatalf("connect through the moved address: %v", err)
			}
			var recovery bool
			err = conn.QueryRow(r.t.Context(), `SELECT pg_is_in_recovery()`).Scan(&recovery)
			conn.Close(context.Background())
			if err != nil || !recovery {
				r.t.Fatalf("the moved address reaches a server in recovery %v (%v), want the standby not yet promoted", recovery, err)
			}
			pause(r.t.Context(), time.Second)
		})
	})
	t.Logf("standby promoted %s after the primary's kill", promoted.Sub(killed).Round(time.Millisecond))
	checkFailoverAnswers(t, r.l.answersSoFar(), killed, promoted)
	checkFollowedPromotion(t, s, standby, r.hosts)
	logDoubtfulCommits(t, s)
	// Requests refused while the address named the read-only standby
	// (their 503s checked above with the others).
	refused := 0
	for _, a := range r.l.answersSoFar() {
		if !a.nats && a.code == http.StatusServiceUnavailable && a.at.After(moved) && a.at.Before(promoted) {
			refused++
		}
	}
	t.Logf("%d REST answers were 503 while the address named the standby before its promotion", refused)
	if refused == 0 {
		t.Errorf("no submission was answered while the address named the standby in recovery: its refusal of writes went untested")
	}
}

// checkFailoverAnswers holds every request's answer (each retry's too)
// to the failover's window: a 5xx other than 503 never, a 503 (with the
// stable code unavailable) or a request unanswered only from the kill to
// failoverUnavailableBound after the promotion.
func checkFailoverAnswers(t *testing.T, answers []faultAnswer, killed, promoted time.Time) {
	t.Helper()
	until := promoted.Add(failoverUnavailableBound)
	var first, last time.Time
	unavailable := 0
	for _, a := range answers {
		bad := a.code == http.StatusServiceUnavailable || a.code == 0
		if a.code >= 500 && a.code != http.StatusServiceUnavailable {
			t.Errorf("%s answered %d at %s: %s", a.tag, a.code, a.at.Format("15:04:05.000"), a.err)
		}
		if !bad {
			continue
		}
		if a.code == http.StatusServiceUnavailable && !strings.Contains(a.err, `"code":"unavailable"`) {
			t.Errorf("%s answered 503 at %s without the code unavailable: %s", a.tag, a.at.Format("15:04:05.000"), a.err)
		}
		unavailable++
		if first.IsZero() || a.at.Before(first) {
			first = a.at
		}
		if a.at.After(last) {
			last = a.at
		}
		if a.at.Before(killed) || a.at.After(until) {
			t.Errorf("%s (nats %v) answered %d at %s, outside the failover's window %s – %s: %s", a.tag, a.nats, a.code,
				a.at.Format("15:04:05.000"), killed.Format("15:04:05.000"), until.Format("15:04:05.000"), a.err)
		}
	}
	if unavailable == 0 {
		t.Logf("no request was refused: every one sent during the failover waited it out")
		return
	}
	t.Logf("%d answers were 503 or none, from %s to %s after the kill (the promotion took %s)", unavailable,
		first.Sub(killed).Round(time.Millisecond), last.Sub(killed).Round(time.Millisecond), promoted.Sub(killed).Round(time.Millisecond))
}

// checkFollowedPromotion checks that the test's pool reads the promoted
// server (the standby's data directory, out of recovery), and that the
// API and each host's worker hold connections to it: they followed the
// promotion through the connection string, nobody told them.
func checkFollowedPromotion(t *testing.T, s *faultStack, standby *faultPG, hosts []string) {
	t.Helper()
	var dataDir string
	var recovery bool
	if err := s.pool.QueryRow(t.Context(), `SELECT current_setting('data_directory'), pg_is_in_recovery()`).Scan(&dataDir, &recovery); err != nil {
		t.Fatalf("read the server: %v", err)
	}
	if want := filepath.Join(standby.dir, "data"); dataDir != want || recovery {
		t.Errorf("the test's pool reads %s (in recovery %v), want the promoted %s", dataDir, recovery, want)
	}
	want := []string{"orderly-api"}
	for _, h := range hosts {
		want = append(want, "orderly-worker-"+h)
	}
	waitUntil(t, 30*time.Second, "orderly's processes connected to the promoted server", func() bool {
		rs, err := s.pool.Query(t.Context(), `SELECT DISTINCT application_name FROM pg_stat_activity`)
		if err != nil {
			return false
		}
		defer rs.Close()
		var names []string
		for rs.Next() {
			var n string
			if rs.Scan(&n) == nil {
				names = append(names, n)
			}
		}
		for _, w := range want {
			if !slices.Contains(names, w) {
				return false
			}
		}
		return true
	})
}

// logDoubtfulCommits logs what the workers' logs say of commits whose
// answer the failover took: claims read back as their own and run, and
// pipelined result-and-claim commits written again alone.
func logDoubtfulCommits(t *testing.T, s *faultStack) {
	t.Helper()
	s.mu.Lock()
	workers := slices.Clone(s.workers)
	s.mu.Unlock()
	counts := map[string]int{}
	for _, w := range workers {
		b, err := os.ReadFile(w.log)
		if err != nil {
			continue
		}
		for _, m := range []string{"running an order whose claim commit was in doubt", "pipelined result and claim failed",
			"result not recorded"} {
			counts[m] += strings.Count(string(b), m)
		}
	}
	t.Logf("commits in doubt across the failover, by the workers' logs: %v", counts)
}

// walSender returns the pid of the primary's WAL sender to its standby.
func (p *faultPG) walSender() int {
	p.t.Helper()
	conn, err := pgx.Connect(p.t.Context(), p.dsn())
	if err != nil {
		p.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var pid int
	if err := conn.QueryRow(p.t.Context(), `SELECT pid FROM pg_stat_replication LIMIT 1`).Scan(&pid); err != nil {
		p.t.Fatalf("find the WAL sender: %v", err)
	}
	return pid
}

// TestFaultsPostgresFailoverToAnAsynchronousStandby is the failover of
// TestFaultsPostgresFailover to a standby that is not synchronous
// (synchronous_standby_names empty, PostgreSQL's default): the primary
// acknowledges a commit before any standby has it. The primary's WAL
// sender is stalled (SIGSTOP) for 2 s under load before the kill, as a
// standby lagging behind a busy primary is: what the primary committed
// in those 2 s, acknowledged to clients and workers, is not on the
// promoted server. The contract cannot hold whole (accepted orders are
// gone from the system of record); what must hold is checked: nothing
// runs twice or out of its client's order, no answer is a 5xx but 503,
// both hosts go on, the API finds PostgreSQL behind what NATS saw (an
// ERROR line and postgres_restored on /v1/status), and an accepted
// order that is gone without having run is named by an ERROR line when
// its message comes. What was lost, and how each loss ends, is logged
// by kind (docs/reliability.md, "A failover of PostgreSQL").
func TestFaultsPostgresFailoverToAnAsynchronousStandby(t *testing.T) {
	s, standby := newFailoverStack(t, false)
	var killed, promoted time.Time
	// drain: the orders whose claim the failover took stay queued for
	// the lost-order search, a minute or two later; they are counted
	// here, not waited for.
	shape := faultLoadShape{submitters: 4, natsSubmitters: 2, period: 150 * time.Millisecond, retry: true,
		timeout: 10 * time.Second, drain: 10 * time.Second}
	r := runFaultLoad(t, s, map[string]int{"h1": 1, "h2": 1}, shape, func(r *faultRun) {
		pause(r.t.Context(), time.Second)
		_ = syscall.Kill(s.pg.walSender(), syscall.SIGSTOP)
		r.s.note("WAL sender stalled")
		pause(r.t.Context(), 2*time.Second)
		killed, promoted = failover(r, standby, nil)
	})
	t.Logf("standby promoted %s after the primary's kill", promoted.Sub(killed).Round(time.Millisecond))
	checkFailoverAnswers(t, r.l.answersSoFar(), killed, promoted)
	checkFollowedPromotion(t, s, standby, r.hosts)

	for _, tl := range r.l.tails {
		tl.poll()
	}
	rows, err := s.rows(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	byTag := map[string]pgOrder{}
	for _, o := range rows {
		byTag[o.tag] = o
	}
	// At most once, and each client's orders in its order on each host,
	// by the markers alone: PostgreSQL lost some of the rows.
	starts := map[string]int{}
	subs := r.l.snapshot()
	subByTag := map[string]faultOrder{}
	for _, o := range subs {
		subByTag[o.tag] = o
	}
	for host, tl := range r.l.tails {
		last := map[string]int{}
		for _, ml := range tl.snapshot() {
			if !ml.start {
				continue
			}
			if starts[ml.tag]++; starts[ml.tag] > 1 {
				t.Errorf("%s started %d times", ml.tag, starts[ml.tag])
			}
			o, ok := subByTag[ml.tag]
			if !ok || !o.accepted() {
				continue
			}
			if o.n < last[o.submitter] {
				t.Errorf("host %s: %s started after %s-%d, which its client submitted later", host, o.tag, o.submitter, last[o.submitter])
			}
			last[o.submitter] = max(last[o.submitter], o.n)
		}
	}
	// What the worker and the API said.
	dropped := map[string]bool{}
	var restoreFound bool
	logs := []string{filepath.Join(s.dir, "api.log")}
	s.mu.Lock()
	for _, w := range s.workers {
		logs = append(logs, w.log)
	}
	s.mu.Unlock()
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		for line := range strings.Lines(string(b)) {
			if strings.Contains(line, `msg="dropped a message whose order is not in the database"`) {
				if m := orderIDRE.FindStringSubmatch(line); m != nil {
					dropped[m[1]] = true
				}
			}
			restoreFound = restoreFound || strings.Contains(line, `msg="PostgreSQL is behind what NATS saw`)
		}
	}
	if !restoreFound {
		t.Errorf("no API logged that PostgreSQL is behind what NATS saw")
	}
	var status struct {
		Restored *struct {
			PostgresGeneration uint64 `json:"postgres_generation"`
			NATSGeneration     uint64 `json:"nats_generation"`
		} `json:"postgres_restored"`
	}
	code, body := serveCall(t, s.apiURL, s.token, "GET", "/v1/status", nil)
	if err := json.Unmarshal(body, &status); code != http.StatusOK || err != nil {
		t.Fatalf("/v1/status: %d %s (%v)", code, body, err)
	}
	if status.Restored == nil {
		t.Errorf("/v1/status has no postgres_restored after the failover lost commits")
	} else {
		t.Logf("/v1/status: postgres_restored, PostgreSQL's generation %d, NATS's %d", status.Restored.PostgresGeneration, status.Restored.NATSGeneration)
	}
	// The census of what the failover took.
	census := map[string][]string{}
	goneUnrun := 0
	for _, o := range subs {
		row, ok := byTag[o.tag]
		switch {
		case o.accepted() && !ok && starts[o.tag] > 0:
			census["accepted, ran, no row left"] = append(census["accepted, ran, no row left"], o.tag)
		case o.accepted() && !ok:
			census["accepted, never ran, no row left"] = append(census["accepted, never ran, no row left"], o.tag)
			goneUnrun++
			if !o.nats && !dropped[o.id.String()] {
				t.Errorf("%s (order %s) was accepted and is not in PostgreSQL, never ran, and no ERROR line names it", o.tag, o.id)
			}
		case ok && row.status == "queued" && starts[o.tag] > 0:
			census["ran, found queued (its claim lost)"] = append(census["ran, found queued (its claim lost)"], o.tag)
		case ok && (row.status == "interrupted" || row.status == "running"):
			// running until its worker's minutely look at its host's
			// running orders interrupts it.
			census["ran, its result lost: "+row.status] = append(census["ran, its result lost: "+row.status], o.tag)
		case ok && row.status == "canceled" && starts[o.tag] > 0:
			census["ran, canceled as maybe run (its publish mark back)"] = append(census["ran, canceled as maybe run (its publish mark back)"], o.tag)
		case ok && row.status != "succeeded":
			census[row.status] = append(census[row.status], o.tag)
		}
	}
	for kind, tags := range census {
		t.Logf("%s: %d %v", kind, len(tags), tags)
	}
	if len(dropped) < goneUnrun {
		t.Errorf("%d accepted orders that never ran are gone from PostgreSQL, and only %d dropped messages were logged", goneUnrun, len(dropped))
	}
	if len(census["accepted, ran, no row left"])+goneUnrun == 0 {
		t.Errorf("no accepted order was lost: the standby did not lag, and the scenario tested nothing")
	}
}

var orderIDRE = regexp.MustCompile(`order_id=(\S+)`)
