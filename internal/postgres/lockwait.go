package postgres

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Backend is told the process id of the PostgreSQL backend that runs the
// statements of a context given to WatchBackend: a caller whose
// statement takes long reads it, from another goroutine, to ask
// PostgreSQL who blocks that backend (BlockersOf). Behind a transaction
// pooler the id is the pooler's, which no backend has.
type Backend struct{ pid atomic.Uint32 }

// PID is the backend's process id, zero until a statement was sent.
func (b *Backend) PID() uint32 { return b.pid.Load() }

type backendKey struct{}

// watching counts the contexts of WatchBackend not yet done: while it is
// zero, the tracer looks at no context. A lookup walks the whole chain of
// a statement's context, and the API's (an HTTP request's, then an
// insert's WithoutCancel) cost an allocation per order in it
// (TestSubmitAllocations), for statements nobody watches.
var watching atomic.Int32

// WatchBackend returns ctx with b told the backend of every statement
// sent under it, until done is called.
func WatchBackend(ctx context.Context, b *Backend) (watched context.Context, done func()) {
	watching.Add(1)
	return context.WithValue(ctx, backendKey{}, b), func() { watching.Add(-1) }
}

// backendTracer tells a context's Backend which connection its statement
// went on. It is every pool's tracer (poolConfig): an atomic load per
// statement or batch when nobody watches, a context lookup while someone
// does.
type backendTracer struct{}

func (backendTracer) note(ctx context.Context, conn *pgx.Conn) {
	if watching.Load() == 0 {
		return
	}
	if b, ok := ctx.Value(backendKey{}).(*Backend); ok {
		b.pid.Store(conn.PgConn().PID())
	}
}

func (t backendTracer) TraceQueryStart(ctx context.Context, conn *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	t.note(ctx, conn)
	return ctx
}

func (backendTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (t backendTracer) TraceBatchStart(ctx context.Context, conn *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	t.note(ctx, conn)
	return ctx
}

func (backendTracer) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}

func (backendTracer) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// Blocker is a backend that holds a lock another one waits for, as
// pg_stat_activity shows it to the role asking: a role that is neither
// the blocker's nor a member of pg_read_all_stats sees its pid, user and
// application_name, but no State nor QueryStart.
type Blocker struct {
	PID             int32
	User            string
	ApplicationName string
	State           string
	QueryStart      *time.Time
}

// blockersSQL reads the backends pid waits for (pg_blocking_pids: the
// holders of the lock it waits for and those queued for it ahead of it),
// with what pg_stat_activity says of each.
const blockersSQL = `SELECT b.pid, coalesce(a.usename::text, ''), coalesce(a.application_name, ''),
	coalesce(a.state, ''), a.query_start
FROM unnest(pg_blocking_pids($1)) AS b(pid) LEFT JOIN pg_stat_activity a ON a.pid = b.pid
ORDER BY b.pid`

// BlockersOf returns the backends that block backend pid, none when it
// does not wait for a lock.
func (s *Store) BlockersOf(ctx context.Context, pid uint32) ([]Blocker, error) {
	rows, err := s.pool.Query(ctx, blockersSQL, int32(pid))
	if err != nil {
		return nil, translate("read who blocks backend", err)
	}
	bs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (b Blocker, err error) {
		err = r.Scan(&b.PID, &b.User, &b.ApplicationName, &b.State, &b.QueryStart)
		return b, err
	})
	if err != nil {
		return nil, translate("read who blocks backend", err)
	}
	return bs, nil
}
