package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/orderly-run/orderly/internal/order"
)

// LeaveOutputsFrom is the output size from which GetOrderLean leaves a
// finished order's kept outputs in the database: stdout_bytes plus
// stderr_bytes, the bytes the process printed. They bound what was kept
// (give or take the truncation marker) and are known without reading the
// contents, so a small order's read costs what GetOrder's does.
const LeaveOutputsFrom = 64 << 10

// leftOut is the condition under which a lean read leaves the contents
// out; OutputsLeft is the same test in Go, and the two must agree
// (TestGetOrderLeanLeavesLargeOutputs).
var leftOut = `status NOT IN ('queued', 'running') AND
	coalesce(stdout_bytes, 0) + coalesce(stderr_bytes, 0) >= ` + strconv.Itoa(LeaveOutputsFrom)

// leanCols is orderCols with stdout and stderr NULL when leftOut holds.
// It is computed once from orderCols, so a column added there is read
// here too, and never written.
var leanCols = strings.NewReplacer(
	"stdout, stdout_bytes", "CASE WHEN "+leftOut+" THEN NULL ELSE stdout END, stdout_bytes",
	"stderr, stderr_bytes", "CASE WHEN "+leftOut+" THEN NULL ELSE stderr END, stderr_bytes",
).Replace(orderCols)

// noOutputCols is orderCols with stdout and stderr NULL whatever their
// size: the statement does not name the content columns, so PostgreSQL
// neither reads them (nor their TOAST) nor sends them
// (TestListWithoutOutputsReadsNoContent). Computed from orderCols as
// leanCols is.
var noOutputCols = strings.NewReplacer(
	"stdout, stdout_bytes", "NULL::bytea, stdout_bytes",
	"stderr, stderr_bytes", "NULL::bytea, stderr_bytes",
).Replace(orderCols)

// getOrderLeanSQL is GetOrder's query with leanCols; whole, so that a
// read does not build it again.
var getOrderLeanSQL = `SELECT ` + leanCols + ` FROM orders WHERE id = $1`

// GetOrderLean is GetOrder for an answer that streams the order's kept
// outputs: when OutputsLeft(o), their contents stay in the database (nil
// here), to be read a slice at a time with ReadOutputAt, so a 10 MiB
// output never sits whole in the API's memory (pgx's read buffer for the
// row, then the scanned copy). One statement either way.
func (s *Store) GetOrderLean(ctx context.Context, id uuid.UUID) (*order.Order, error) {
	o, err := scanOrder(s.pool.QueryRow(ctx, getOrderLeanSQL, id))
	if err != nil {
		return nil, translate("get order "+id.String(), err)
	}
	return o, nil
}

// getOrderLeanWithCancelSQL is getOrderLeanSQL with the order's cancel
// request, under names no column of orders has (host and signal are in
// both tables).
var getOrderLeanWithCancelSQL = `SELECT ` + leanCols + `, c.cancel_actor, c.cancel_signal, c.cancel_requested_at
FROM orders LEFT JOIN LATERAL (
	SELECT actor AS cancel_actor, signal AS cancel_signal, requested_at AS cancel_requested_at
	FROM cancel_requests WHERE order_id = orders.id
) c ON true
WHERE id = $1`

// GetOrderLeanWithCancel is GetOrderLean and the order's cancel request
// (nil when nobody asked to cancel it) in one statement: a client
// polling a running order's GET read the order, then its cancel
// request, two round trips per poll.
func (s *Store) GetOrderLeanWithCancel(ctx context.Context, id uuid.UUID) (*order.Order, *CancelRequest, error) {
	var (
		actor, signal *string
		at            *time.Time
	)
	o, err := scanOrder(s.pool.QueryRow(ctx, getOrderLeanWithCancelSQL, id), &actor, &signal, &at)
	if err != nil {
		return nil, nil, translate("get order "+id.String(), err)
	}
	if actor == nil || signal == nil || at == nil {
		return o, nil, nil
	}
	return o, &CancelRequest{OrderID: id, Host: o.Host, Actor: *actor, Signal: *signal, RequestedAt: *at}, nil
}

// getOrderNoOutputsSQL is GetOrder's query with noOutputCols.
var getOrderNoOutputsSQL = `SELECT ` + noOutputCols + ` FROM orders WHERE id = $1`

// GetOrderWithoutOutputs is GetOrder for an answer that shows no output
// (an event stream's finished with outputs=none): the contents are nil
// whatever their size, and neither read nor sent by PostgreSQL; their
// sizes, truncation and hashes are read.
func (s *Store) GetOrderWithoutOutputs(ctx context.Context, id uuid.UUID) (*order.Order, error) {
	o, err := scanOrder(s.pool.QueryRow(ctx, getOrderNoOutputsSQL, id))
	if err != nil {
		return nil, translate("get order "+id.String(), err)
	}
	return o, nil
}

// OutputsLeft reports whether GetOrderLean left o's kept outputs in the
// database. A finished order never changes, so its outputs read later in
// slices are the ones it had when read. (An order read whole whose
// contents are both empty may count as left too: reading them gives the
// same nothing.)
func OutputsLeft(o *order.Order) bool {
	r := o.Result
	return o.Status.Terminal() && r != nil && r.Stdout.Content == nil && r.Stderr.Content == nil &&
		r.Stdout.Bytes+r.Stderr.Bytes >= LeaveOutputsFrom
}

// Output names one of an order's kept outputs.
type Output string

// The outputs ReadOutputAt reads.
const (
	Stdout Output = "stdout"
	Stderr Output = "stderr"
)

// ReadOutputAt reads up to len(p) bytes of finished order id's kept
// output from byte off into p, like io.ReaderAt: n < len(p) only at the
// end. Each call is one statement holding a connection only while it
// reads, never while the caller writes the slice on.
func (s *Store) ReadOutputAt(ctx context.Context, id uuid.UUID, out Output, p []byte, off int64) (n int, err error) {
	var q string
	switch out {
	case Stdout:
		q = `SELECT substring(stdout FROM $2 FOR $3) FROM orders WHERE id = $1 AND status NOT IN ('queued', 'running')`
	case Stderr:
		q = `SELECT substring(stderr FROM $2 FOR $3) FROM orders WHERE id = $1 AND status NOT IN ('queued', 'running')`
	default:
		return 0, fmt.Errorf("read output %q of order %s: no such output", out, id)
	}
	doing := fmt.Sprintf("read %s of order %s at %d", out, id, off)
	rows, err := s.pool.Query(ctx, q, id, off+1, len(p))
	if err != nil {
		return 0, translate(doing, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return 0, translate(doing, err)
		}
		return 0, order.ErrNotFound
	}
	var b pgtype.DriverBytes // pgx's own read buffer: copied out before the next read
	if err := rows.Scan(&b); err != nil {
		return 0, translate(doing, err)
	}
	n = copy(p, b)
	rows.Close()
	return n, translate(doing, rows.Err())
}
