package worker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/postgres"
)

// statementWaitWarn is how long a statement on the order path may take
// before the worker says it waits. Such a statement takes milliseconds;
// one that takes seconds waits for a lock another session holds (an
// operator's LOCK TABLE or SELECT … FOR UPDATE left open, a VACUUM FULL
// of orders), and orderly sets no lock_timeout, so it waits as long as
// the lock is held while the host's queue stands still. 5 s is the
// migrations' own lock_timeout and the heartbeat's default, well before
// the ack wait (30 s) redelivers the message the statement is for.
const statementWaitWarn = 5 * time.Second

// blockersReadTimeout bounds the read of who blocks a waiting statement:
// it goes on another connection, which a PostgreSQL out of slots may not
// give.
const blockersReadTimeout = 5 * time.Second

// watchWait runs fn, a store call on the order path of order id whose
// step the caller names ("claim order", "write result", …; next is the
// order the pipelined step claims, uuid.Nil for the others), and says when
// it waited long: once StatementWaitWarn passed, one WARN naming the
// order, the host, the backend that waits and, read on another
// connection, the backends that block it (pg_blocking_pids); once the
// call returns after that, one INFO with the whole wait. A quick call
// costs its entry in the worker's list of calls in flight and the
// context's note of its backend: no timer, no goroutine, no query
// (stmtWaits).
func (w *Worker) watchWait(ctx context.Context, step string, id, next uuid.UUID, fn func(context.Context) error) error {
	s := &stmtWait{step: step, id: id, next: next, start: time.Now()}
	w.waits.add(w, s)
	wctx, watched := postgres.WatchBackend(ctx, &s.b)
	err := fn(wctx)
	watched()
	if warned := w.waits.remove(s); warned != nil {
		<-warned // the WARN first
		attrs := append(waitAttrs(step, id, next), slog.Duration("waited", time.Since(s.start).Round(time.Millisecond)),
			slog.Bool("failed", err != nil))
		w.logger.LogAttrs(context.Background(), slog.LevelInfo, "postgresql statement done after a wait", attrs...)
	}
	return err
}

// stmtWaits is the worker's watch over the store calls of watchWait in
// flight: one timer for all of them, armed for the oldest's
// StatementWaitWarn while any is in flight, instead of a timer (and its
// closure and channel) per call, two or three calls per order. Calls that
// end before it fires leave it armed; when it fires it warns of the late
// ones and is armed again for the next to come due, or left off when
// none is in flight, so an idle worker's timer does not fire.
type stmtWaits struct {
	mu       sync.Mutex
	inflight []*stmtWait
	timer    *time.Timer
	armed    bool
}

// stmtWait is one store call in flight.
type stmtWait struct {
	step     string
	id, next uuid.UUID
	start    time.Time
	b        postgres.Backend
	// warned is made, under stmtWaits.mu, when the call is found late,
	// and closed once its WARN is written.
	warned chan struct{}
}

// add puts s in flight and arms the timer (w.checkWaits, after
// StatementWaitWarn) unless it is armed already, for an older call,
// which is due first.
func (ws *stmtWaits) add(w *Worker, s *stmtWait) {
	ws.mu.Lock()
	ws.inflight = append(ws.inflight, s)
	if !ws.armed {
		ws.armed = true
		if ws.timer == nil {
			ws.timer = time.AfterFunc(w.opts.StatementWaitWarn, w.checkWaits)
		} else {
			ws.timer.Reset(w.opts.StatementWaitWarn)
		}
	}
	ws.mu.Unlock()
}

// remove takes s out of flight and returns its warned channel: nil when
// it was not found late.
func (ws *stmtWaits) remove(s *stmtWait) chan struct{} {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for i, x := range ws.inflight {
		if x == s {
			last := len(ws.inflight) - 1
			ws.inflight[i], ws.inflight[last] = ws.inflight[last], nil
			ws.inflight = ws.inflight[:last]
			break
		}
	}
	return s.warned
}

// stop leaves the timer off, at the end of Run.
func (ws *stmtWaits) stop() {
	ws.mu.Lock()
	if ws.timer != nil {
		ws.timer.Stop()
	}
	ws.armed = false
	ws.mu.Unlock()
}

// checkWaits is the timer's function: it takes the calls in flight past
// StatementWaitWarn as late, arms the timer again for the first of the
// others to come due, and writes the late ones' WARNs (each once; a
// call that ends meanwhile waits for its WARN before its INFO).
func (w *Worker) checkWaits() {
	ws := &w.waits
	now := time.Now()
	var late []*stmtWait
	var next time.Duration
	ws.mu.Lock()
	for _, s := range ws.inflight {
		if s.warned != nil {
			continue
		}
		if left := w.opts.StatementWaitWarn - now.Sub(s.start); left > 0 {
			if next == 0 || left < next {
				next = left
			}
			continue
		}
		s.warned = make(chan struct{})
		late = append(late, s)
	}
	ws.armed = next > 0
	if ws.armed {
		ws.timer.Reset(next)
	}
	ws.mu.Unlock()
	for _, s := range late {
		w.warnWait(s.step, s.id, s.next, &s.b, s.start)
		close(s.warned)
	}
}

// warnWait is watchWait's WARN: what the statement waits for, as far as
// the worker's role may see it (pg_stat_activity hides another role's
// state and query_start from a role without pg_read_all_stats).
func (w *Worker) warnWait(step string, id, next uuid.UUID, b *postgres.Backend, start time.Time) {
	attrs := append(waitAttrs(step, id, next), slog.Duration("waited", time.Since(start).Round(time.Millisecond)))
	pid := b.PID()
	attrs = append(attrs, slog.Int("backend_pid", int(pid)))
	if pid != 0 {
		ctx, cancel := context.WithTimeout(context.Background(), blockersReadTimeout)
		blockers, err := w.store.BlockersOf(ctx, pid)
		cancel()
		switch {
		case err != nil:
			attrs = append(attrs, slog.String("blockers_error", err.Error()))
		case len(blockers) == 0:
			// Not a lock: a slow server, or the backend's id is a
			// pooler's (PgBouncer), which no backend has.
			attrs = append(attrs, slog.String("blocked_by", "no backend holds a lock it waits for"))
		default:
			attrs = append(attrs, slog.Any("blocked_by", blockerAttrs(blockers)))
		}
	}
	w.logger.LogAttrs(context.Background(), slog.LevelWarn, "postgresql statement waits: the host's orders wait behind it",
		attrs...)
}

// waitAttrs are what both lines of a wait say of it. The logger names
// the host (and the instance) already. The pipelined step's wait is
// often the next order's: a lock on its row.
func waitAttrs(step string, id, next uuid.UUID) []slog.Attr {
	attrs := make([]slog.Attr, 0, 8)
	attrs = append(attrs, slog.String("order_id", id.String()), slog.String("step", step))
	if next != uuid.Nil {
		attrs = append(attrs, slog.String("next_order_id", next.String()))
	}
	return attrs
}

// blockerAttrs is one group per blocker, its unknowns left out.
func blockerAttrs(bs []postgres.Blocker) []map[string]any {
	out := make([]map[string]any, 0, len(bs))
	for _, b := range bs {
		m := map[string]any{"pid": b.PID, "usename": b.User, "application_name": b.ApplicationName}
		if b.State != "" {
			m["state"] = b.State
		}
		if b.QueryStart != nil {
			m["query_start"] = b.QueryStart.UTC().Format(time.RFC3339Nano)
		}
		out = append(out, m)
	}
	return out
}
