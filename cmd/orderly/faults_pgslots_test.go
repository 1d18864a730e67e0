package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pgSlotHogName is the application_name of pgSlotHog's connections.
const pgSlotHogName = "fault-slot-hog"

// pgSlotHog is another application taking every connection slot
// PostgreSQL has free, as the surplus of a fleet larger than
// max_connections, or a leaking pool of something else, does. It
// connects as the superuser, so it takes the slots reserved for
// superusers too.
type pgSlotHog struct {
	cfg *pgx.ConnConfig

	mu    sync.Mutex
	conns []*pgx.Conn
	full  bool // the last try was refused with 53300
	stop  context.CancelFunc
	done  chan struct{}
}

// startPGSlotHog connects to dsn until PostgreSQL refuses it for want of
// slots, and goes on taking every slot that frees until release.
func startPGSlotHog(t *testing.T, dsn string) *pgSlotHog {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = pgSlotHogName
	ctx, cancel := context.WithCancel(context.Background())
	h := &pgSlotHog{cfg: cfg, stop: cancel, done: make(chan struct{})}
	t.Cleanup(h.release)
	go func() {
		defer close(h.done)
		for ctx.Err() == nil {
			c, err := pgx.ConnectConfig(ctx, h.cfg)
			h.mu.Lock()
			if err == nil {
				h.conns = append(h.conns, c)
			}
			var pgErr *pgconn.PgError
			h.full = errors.As(err, &pgErr) && pgErr.Code == "53300"
			h.mu.Unlock()
			if err != nil {
				pause(ctx, 10*time.Millisecond)
			}
		}
	}()
	waitUntil(t, 30*time.Second, "the hog holds every free slot", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.full
	})
	return h
}

// held is how many connections the hog holds.
func (h *pgSlotHog) held() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

// exec runs sql on one of the hog's connections: while it holds every
// slot, nobody else can.
func (h *pgSlotHog) exec(sql string) (pgconn.CommandTag, error) {
	h.mu.Lock()
	c := h.conns[0]
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Exec(ctx, sql)
}

// release closes every connection the hog holds and stops it taking more.
func (h *pgSlotHog) release() {
	h.stop()
	<-h.done
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		_ = c.Close(context.Background())
	}
	h.conns = nil
}

// endOrderlyBackends ends every backend of orderly's processes (the
// application_name each gives its connections) but the test's own pool's,
// as a PostgreSQL restart or an operator's clean-up would, and returns
// how many there were. With the hog taking each slot they free, the
// processes cannot connect again.
func (h *pgSlotHog) endOrderlyBackends() (int64, error) {
	tag, err := h.exec(`SELECT pg_terminate_backend(pid, 2000) FROM pg_stat_activity
		WHERE application_name LIKE 'orderly-%' AND application_name <> '` + faultTestPool + `'`)
	return tag.RowsAffected(), err
}

// TestFaultsPostgresOutOfConnections runs the sync and async load
// (retrying clients, every third order with ?wait=10) while another
// application takes every connection slot PostgreSQL has free
// (max_connections lowered to 30), then ends orderly's own backends so
// that its pools must connect again and are refused (FATAL 53300 "sorry,
// too many clients already") for 15 s; h2's worker is stopped (SIGTERM)
// and a new one started while the slots are full. Then the slots are
// freed. Clients get 503 `unavailable`, never a 500 and never silence
// past their 15 s timeout (a ?wait=10 answers within it); running
// workers keep their hosts and retry their claims; the worker started
// meanwhile waits for PostgreSQL, saying so, and takes its host once it
// gets a slot; h1's worker, its connection ended in a 6 s order with
// more queued behind it, retries its writes and says when PostgreSQL
// answers again; the whole contract holds, and both hosts run orders
// again within the recovery bound of the release.
func TestFaultsPostgresOutOfConnections(t *testing.T) {
	s := newFaultStack(t)
	if _, err := s.pool.Exec(t.Context(), "ALTER SYSTEM SET max_connections = 30"); err != nil {
		t.Fatal(err)
	}
	s.pg.restartImmediate()
	shape := faultLoadShape{submitters: faultSubmitters, period: faultPeriod, retry: true, waitEvery: 3,
		timeout: 15 * time.Second}
	var (
		newWorker          *faultWorker
		began, freed       time.Time
		endedBackends, hog int
	)
	r := runFaultScenarioLoad(t, s, map[string]int{"h1": 1, "h2": 1}, shape, func(r *faultRun) {
		h := startPGSlotHog(t, s.pg.dsn())
		r.s.note("slot hog holds every free slot (%d connections)", h.held())
		// h2's worker stops and a new one starts while nothing is free:
		// the old one's connections still work, so it stops cleanly.
		for _, w := range r.s.liveWorkers("h2") {
			w.signal(syscall.SIGTERM)
			if !w.waitExit(40 * time.Second) {
				t.Fatalf("%s did not exit after SIGTERM", w.name)
			}
		}
		newWorker = r.s.startWorker("h2")
		r.s.note("%s started while the slots are full", newWorker.name)
		// h1 runs a 6 s order, with the next ones queued behind it, when
		// its connection goes: its result and their claims meet the
		// refusals. (A request that needs one connection more than the
		// API's pool holds is refused already; in the runs none did.)
		v := r.l.submit("v", "h1", true, "6")
		if !v.accepted() {
			t.Fatalf("victim order: HTTP %d %s", v.code, v.err)
		}
		r.l.waitStarted(t, "h1", v.tag, 30*time.Second)
		r.expect[v.tag] = "succeeded"
		pause(t.Context(), time.Second)
		// Then orderly's own connections go, and the hog takes their
		// slots: every pool must connect again, and is refused.
		began = time.Now()
		for time.Since(began) < 10*time.Second {
			n, err := h.endOrderlyBackends()
			if err != nil {
				t.Fatalf("end orderly's backends: %v", err)
			}
			if n == 0 {
				break
			}
			endedBackends += int(n)
			pause(t.Context(), 200*time.Millisecond)
		}
		r.s.note("orderly's backends ended (%d); the hog holds %d", endedBackends, h.held())
		waitLogLine(t, newWorker.faultProc, "too many clients already", 30*time.Second)
		// Longer than a ?wait=10 submission made just before waits: the
		// submitters then send new orders into the outage.
		pause(t.Context(), 15*time.Second)
		hog = h.held()
		h.release()
		freed = time.Now()
		r.s.note("slot hog released")
		r.fault("slots freed", "h1")
		r.fault("slots freed", "h2")
	})
	t.Logf("the hog held %d connections; %d of orderly's backends were ended", hog, endedBackends)
	checkOutageAnswers(t, r.l, began, freed)
	for _, want := range []string{"waiting for postgresql", "too many clients already"} {
		if !strings.Contains(readLog(newWorker.faultProc), want) {
			t.Errorf("the worker started while the slots were full never logged %q:\n%s", want, logTail(newWorker.log, 20))
		}
	}
	for _, w := range r.s.liveWorkers("h1") {
		if log := readLog(w.faultProc); !strings.Contains(log, "postgresql answers again") {
			t.Errorf("%s never logged that PostgreSQL answers again:\n%s", w.name, logTail(w.log, 20))
		}
	}
}

// checkOutageAnswers checks every answer the load's clients got: a 202 or
// a 200, or a 503 with the error code unavailable; never another status,
// never no answer within the client's timeout. It logs how many 503s came
// and when, against the outage from began to ended.
func checkOutageAnswers(t *testing.T, l *faultLoad, began, ended time.Time) {
	t.Helper()
	var first, last time.Time
	unavailable, early := 0, 0
	codes := map[int]int{}
	for _, a := range l.answersSoFar() {
		codes[a.code]++
		switch a.code {
		case http.StatusOK, http.StatusAccepted:
		case http.StatusServiceUnavailable:
			var body struct {
				Error struct{ Code string } `json:"error"`
			}
			if err := json.Unmarshal([]byte(a.err), &body); err != nil || body.Error.Code != "unavailable" {
				t.Errorf("%s at %s: 503 without the error code unavailable: %s", a.tag, a.at.Format("15:04:05.000"), a.err)
			}
			unavailable++
			if a.at.Before(began) {
				early++
			}
			if first.IsZero() {
				first = a.at
			}
			last = a.at
		case 0:
			t.Errorf("%s at %s: no answer within the client's timeout (%s)", a.tag, a.at.Format("15:04:05.000"), a.err)
		default:
			t.Errorf("%s at %s: answered %d: %s", a.tag, a.at.Format("15:04:05.000"), a.code, a.err)
		}
	}
	at := func(x time.Time) string {
		if x.IsZero() {
			return "-"
		}
		return fmt.Sprintf("%+.1fs", x.Sub(began).Seconds())
	}
	var longest time.Duration
	for _, o := range l.snapshot() {
		longest = max(longest, o.answered.Sub(o.lastSent))
	}
	t.Logf("answers by status %v; 503s: %d (%d before the outage began), from %s to %s after it began (it ended at %s); "+
		"the longest last request took %s", codes, unavailable, early, at(first), at(last), at(ended), longest.Round(10*time.Millisecond))
}
