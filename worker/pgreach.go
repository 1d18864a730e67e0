package worker

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
)

// pgReach is whether the worker reaches PostgreSQL: the writes of the
// delivery protocol (retry) and the touch of the hosts table say so, no
// statement of its own. A worker cut off from PostgreSQL but not from
// NATS (a restart that left it out of max_connections, a partition,
// pg_hba, a password rotated, a pooler full) keeps its lease and retries
// its claim every 2 s while its host's orders pile up; before this it
// showed online and healthy everywhere, and its log said the same retry
// every 2 s. Its heartbeat now carries the outage (queue.HostInfo), which
// the hosts listing and the fleet gauges show, and its log says it once
// when it starts and once, with a summary, when it ends.
type pgReach struct {
	mu       sync.Mutex
	since    time.Time // the first failure of the outage; zero while reachable
	what     string    // what failed first
	last     string    // the last failure's error
	failures int
}

// unreachable tells a failure of PostgreSQL itself (no connection, one
// lost, a server shutting down, out of slots, of disk, a statement
// unanswered past its deadline) from one of the statement: a write a
// trigger or a constraint refuses is retried as before, and logged at
// each retry, but is not an outage of the host's database.
func unreachable(err error) bool {
	return order.ErrorCode(err) == order.CodeUnavailable || errors.Is(err, context.DeadlineExceeded)
}

// pgErrMax bounds the error the heartbeat carries: a heartbeat is small,
// and a driver's error can quote a long server message.
const pgErrMax = 300

// shorten keeps s's start and its end, where a driver puts the server's
// own message ("role … is not permitted to log in", "too many clients").
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	head := n / 4
	return strings.ToValidUTF8(s[:head]+"…"+s[len(s)-(n-head):], "")
}

// pgFailed records a failed statement; the first of an outage is logged,
// the retries that follow only at debug level.
func (w *Worker) pgFailed(what string, err error) {
	p := &w.pg
	p.mu.Lock()
	first := p.since.IsZero()
	if first {
		p.since, p.what, p.failures = time.Now(), what, 0
	}
	p.failures++
	p.last = shorten(err.Error(), pgErrMax)
	p.mu.Unlock()
	if first {
		w.logger.Warn(what+"; retrying", "error", err,
			"note", "the host's orders wait until PostgreSQL answers; the worker keeps its lease, and the hosts listing shows the host unable to reach PostgreSQL")
		return
	}
	w.logger.Debug(what+"; retrying", "error", err)
}

// pgReached records a statement PostgreSQL took, and ends an outage with
// one line that sums it up.
func (w *Worker) pgReached() {
	p := &w.pg
	p.mu.Lock()
	if p.since.IsZero() {
		p.mu.Unlock()
		return
	}
	since, what, last, failures := p.since, p.what, p.last, p.failures
	p.since, p.what, p.last, p.failures = time.Time{}, "", "", 0
	p.mu.Unlock()
	w.logger.Info("postgresql answers again", "unreachable_for", time.Since(since).Round(time.Millisecond).String(),
		"failed_attempts", failures, "first_failed", what, "last_error", last)
}

// outage is the current outage for the heartbeat, nil while PostgreSQL
// answers.
func (p *pgReach) outage() *queue.PostgresOutage {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.since.IsZero() {
		return nil
	}
	return &queue.PostgresOutage{Since: p.since.UTC(), Error: p.last, Failures: p.failures}
}
