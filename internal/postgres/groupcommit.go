package postgres

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/orderly-run/orderly/internal/order"
)

// insertGroup commits concurrent submissions together. While maxFlying
// insert transactions are in flight, the InsertOrder calls that arrive
// wait in pending; when one ends, the first of them sends them all as one
// transaction in one round trip (a pipeline of their statements and one
// Sync, which PostgreSQL runs as one implicit transaction): one commit and
// one WAL flush for the lot. A lone submission never waits: with room in
// flight it sends its own statement at once, as it always did. There is
// no timer; a group is whatever queued while the others were in flight.
// Each order keeps its own statement (its idempotency check, its action's
// limit) and its own answer; the orders of a group share a submitted_at
// (now() is the transaction's start). The price: an insert that waits in
// PostgreSQL for a lock (an action's row or an idempotency key another
// API replica's insert holds) takes one of the maxFlying places until it
// ends, and with both taken this process's submissions queue behind it.
type insertGroup struct {
	mu      sync.Mutex
	flying  int           // insert transactions in flight, at most maxFlying
	pending []*insertCall // the inserts that wait, oldest first

	watch insertWatch // the bound on the inserts out (insertbound.go)
}

// insertCall is one InsertOrder waiting in an insertGroup, and then its
// outcome in the group's transaction.
type insertCall struct {
	ctx    context.Context
	q      string
	params []any
	o      *order.Order
	wake   chan struct{} // closed when the call leads the next group, or has its outcome
	group  []*insertCall // when it leads: the group, itself first; set before wake is closed

	pid         uint32
	err         error
	alone       bool // the group recorded nothing: insert again on its own
	submittedAt time.Time
	expiresAt   *time.Time
	scan        insertedScan
}

// maxFlying is how many insert transactions may be in flight at once.
// With one, every order waited for the whole transaction ahead of it
// (its statements and its WAL flush): less CPU per order than with two,
// but 5 – 15 % fewer submissions a second at 16 connections on a machine
// not otherwise busy; with two, a group forms and runs while the other
// flushes (docs/benchmarks.md, "Group commit of submissions").
const maxFlying = 2

// acquireError is a pool's refusal of a connection: the insert was never
// sent, so nothing can have been recorded.
type acquireError struct{ err error }

func (e acquireError) Error() string { return e.err.Error() }

// insertGrouped runs the insert q of o, alone when fewer than maxFlying
// are in flight, or else in the next group. It returns the backend the
// statement went to (the one to fence if the answer was lost) and the
// statement's error, or an acquireError.
func (s *Store) insertGrouped(ctx context.Context, q string, params []any, o *order.Order) (uint32, error) {
	g := &s.inserts
	g.mu.Lock()
	if g.flying < maxFlying {
		g.flying++
		g.mu.Unlock()
		// Deferred: a panic (recovered by the HTTP server) must not leave
		// every later submission queued behind a transaction that ended.
		defer g.next()
		return s.insertAlone(ctx, q, params, o)
	}
	c := &insertCall{ctx: ctx, q: q, params: params, o: o, wake: make(chan struct{})}
	g.pending = append(g.pending, c)
	g.mu.Unlock()
	select {
	case <-c.wake:
	case <-ctx.Done():
		if g.withdraw(c) {
			return 0, ctx.Err()
		}
		<-c.wake // it leads the next group, or is in a group in flight
	}
	if batch := c.group; batch != nil {
		defer g.next()
		if len(batch) == 1 {
			return s.insertAlone(ctx, q, params, o)
		}
		s.leadBatch(c, batch)
	}
	if c.alone {
		return s.insertAlone(ctx, q, params, o)
	}
	if c.err == nil {
		o.SubmittedAt, o.ExpiresAt = c.submittedAt, c.expiresAt
	}
	return c.pid, c.err
}

// errGroupUnfinished answers the callers of a group whose leader did not
// finish it (a panic): its commit may or may not have happened.
var errGroupUnfinished = errors.New("the group's transaction did not finish")

// leadBatch runs the group batch that c leads and wakes its other callers,
// also when it panics.
func (s *Store) leadBatch(c *insertCall, batch []*insertCall) {
	done := false
	defer func() {
		for _, b := range batch {
			if b == c {
				continue
			}
			if !done {
				b.alone, b.err = false, errGroupUnfinished
			}
			close(b.wake)
		}
	}()
	s.insertBatch(batch)
	done = true
}

// next ends a transaction in flight: the waiting calls become the next
// group, which the oldest of them leads.
func (g *insertGroup) next() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.pending) == 0 {
		g.flying--
		return
	}
	c := g.pending[0]
	c.group, g.pending = g.pending, nil
	close(c.wake)
}

// withdraw takes c, whose caller gave up, out of pending: true when it
// was still there (not yet in a group).
func (g *insertGroup) withdraw(c *insertCall) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	i := slices.Index(g.pending, c)
	if i < 0 {
		return false
	}
	g.pending = slices.Delete(g.pending, i, i+1)
	return true
}

// insertAlone runs one insert in a transaction of its own.
func (s *Store) insertAlone(ctx context.Context, q string, params []any, o *order.Order) (pid uint32, err error) {
	for try := 0; ; try++ {
		conn, aerr := s.pool.Acquire(ctx)
		if aerr != nil {
			return 0, acquireError{aerr}
		}
		pid = conn.Conn().PgConn().PID()
		nc := conn.Conn().PgConn().Conn()
		s.inserts.watch.sent(nc)
		var ins insertedScan
		err = conn.QueryRow(ctx, q, params...).Scan(ins.scanInto(&o.SubmittedAt, &o.ExpiresAt)...)
		s.inserts.watch.release(conn, nc)
		// A statement that never left recorded nothing: its pooled
		// connection was one PostgreSQL had already closed (a restart, a
		// cut link), used again within the second after which the pool
		// pings it first. The pool has dropped it; the insert goes again
		// on another, at most once per connection the pool can hold, so
		// that a restart costs the client no 503.
		if err == nil || !pgconn.SafeToRetry(err) || ctx.Err() != nil || try >= int(s.pool.Config().MaxConns) {
			return pid, err
		}
	}
}

// insertBatch runs calls' inserts in one transaction and one round trip,
// and gives each call its outcome. A statement's error aborts the whole
// transaction (PostgreSQL skips the rest of the pipeline and rolls back at
// its Sync), so when PostgreSQL refused any of them, or the statements
// never left, nothing was recorded and each call inserts again on its own,
// where its error is its own and its neighbours' are not. When the
// connection broke after they left, the commit may or may not have
// happened: every call gets the error and the pid to fence, as a lone
// insert would (InsertOrder's insertOutcome), and reads its row back.
func (s *Store) insertBatch(calls []*insertCall) {
	ctx, stop := batchContext(calls)
	defer stop()
	var (
		pid   uint32
		first error
	)
	for try := 0; ; try++ {
		conn, err := s.pool.Acquire(ctx)
		if err != nil {
			for _, c := range calls {
				c.alone = true
			}
			return
		}
		pid = conn.Conn().PgConn().PID()
		// A batch of its own for each connection: a queued query keeps
		// the statement it was prepared as on the connection it went to.
		b := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, len(calls))}
		for _, c := range calls {
			b.Queue(c.q, c.params...)
		}
		nc := conn.Conn().PgConn().Conn()
		s.inserts.watch.sent(nc)
		br := conn.SendBatch(ctx, b)
		first = nil
		for _, c := range calls {
			c.err = br.QueryRow().Scan(c.scan.scanInto(&c.submittedAt, &c.expiresAt)...)
			if c.err != nil && c.err != pgx.ErrNoRows && first == nil {
				first = c.err
			}
		}
		if err := br.Close(); first == nil {
			first = err
		}
		s.inserts.watch.release(conn, nc)
		if first == nil || !pgconn.SafeToRetry(first) || ctx.Err() != nil || try >= int(s.pool.Config().MaxConns) {
			break
		}
	}
	switch {
	case first == nil:
		for _, c := range calls {
			c.pid = pid // c.err is nil, or ErrNoRows for a key already used
		}
	case refusedStatement(first), pgconn.SafeToRetry(first):
		// An ERROR (not a FATAL, which ends the session and may come
		// after the commit) aborted the transaction; or nothing left.
		for _, c := range calls {
			c.alone = true
		}
	default:
		for _, c := range calls {
			c.pid, c.err = pid, first
		}
	}
}

// batchContext is the context of a group's transaction: it ends when
// every caller in it has given up (each caller's own context stops only
// its own wait), and keeps the values of the first.
func batchContext(calls []*insertCall) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(calls[0].ctx))
	var left atomic.Int32
	left.Store(int32(len(calls)))
	stops := make([]func() bool, 0, len(calls))
	for _, c := range calls {
		stops = append(stops, context.AfterFunc(c.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		}))
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}
