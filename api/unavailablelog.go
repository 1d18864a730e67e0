package api

import (
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orderly-run/orderly/internal/order"
)

// unavailableLogEvery is how often, at most, a run of 503 answers writes
// a line while it lasts, and how long without one ends it. During an
// outage of PostgreSQL every request answered 503 and wrote its own
// ERROR line (docs/decisions.md, hB16): under load, thousands a second,
// which buried the cause and filled the disk of whoever keeps the logs.
const unavailableLogEvery = 10 * time.Second

// unavailableCausesLogged is how many causes a run logs by a line of
// their own at their first 503 (its first included); past it, the others
// are in its summaries only. A handful: the dependencies that answer 503
// (PostgreSQL, NATS, the host registry, a worker), not one per host.
const unavailableCausesLogged = 8

// unavailableLog thins the "request failed" lines of the API's 503
// answers (a dependency unreachable, an order recorded but not queued).
// A run is 503 answers less than unavailableLogEvery apart. Its first is
// logged at ERROR with its cause, as every one was; the others by a
// summary at most every unavailableLogEvery with how many were not
// logged and the latest cause; and the first request answered (any
// status) unavailableLogEvery or more after its last ends it with a
// WARN line of its count and span, so the tail after the last summary
// is not lost. A 503 of another cause than the run's so far (the
// answer's message: "database unavailable" and "event bus unavailable"
// are two) is logged as a run's first is, up to unavailableCausesLogged:
// a second failure that began during the first was otherwise named only
// if it happened to be the latest at a summary. A partial outage (NATS
// down: reads answer, submissions do not) stays one run while
// submissions keep failing.
// orderly_http_unavailable_total still counts every one, by route.
type unavailableLog struct {
	inRun  atomic.Bool // a run is on: ended checks it without the lock
	mu     sync.Mutex
	since  time.Time // the run's first failure
	line   time.Time // the run's last line
	lastAt time.Time // the run's last failure
	total  int       // failures in the run
	quiet  int       // failures not logged since line
	last   error     // the latest cause
	causes []string  // the answers' messages logged in the run
}

// failed logs, or counts, one 503 answer of request r for err.
func (l *unavailableLog) failed(logger *slog.Logger, r *http.Request, err error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.endIfQuiet(logger, now)
	cause := err.Error()
	var e *order.Error
	if errors.As(err, &e) {
		cause = e.Message
	}
	if l.total == 0 {
		l.since, l.line, l.lastAt, l.total, l.quiet, l.last = now, now, now, 1, 0, err
		l.causes = append(l.causes[:0], cause)
		l.inRun.Store(true)
		logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", err,
			"note", "further 503 answers are summed up every "+unavailableLogEvery.String()+" while they last")
		return
	}
	l.total++
	l.lastAt, l.last = now, err
	if len(l.causes) < unavailableCausesLogged && !slices.Contains(l.causes, cause) {
		l.causes = append(l.causes, cause)
		logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", err,
			"note", "another cause during a run of 503 answers", "run_total", l.total)
		return
	}
	l.quiet++
	if now.Sub(l.line) < unavailableLogEvery {
		return
	}
	logger.Error("requests failed", "not_logged", l.quiet, "run_total", l.total, "since", l.since.UTC().Format(time.RFC3339),
		"last_method", r.Method, "last_path", r.URL.Path, "error", err)
	l.line, l.quiet = now, 0
}

// answered ends a run of 503 answers when a request is answered
// unavailableLogEvery or more after the run's last.
func (l *unavailableLog) answered(logger *slog.Logger) {
	if !l.inRun.Load() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.endIfQuiet(logger, time.Now())
}

// endIfQuiet ends the run, if there is one and its last failure is
// unavailableLogEvery or more before now. It runs under l.mu.
func (l *unavailableLog) endIfQuiet(logger *slog.Logger, now time.Time) {
	if l.total == 0 || now.Sub(l.lastAt) < unavailableLogEvery {
		return
	}
	logger.Warn("requests answered again after failures", "unavailable", l.total, "not_logged", l.quiet,
		"since", l.since.UTC().Format(time.RFC3339), "until", l.lastAt.UTC().Format(time.RFC3339), "last_error", l.last.Error())
	l.total, l.quiet, l.last = 0, 0, nil
	l.inRun.Store(false)
}
