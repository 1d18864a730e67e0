package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderly-run/orderly/internal/order"
)

// CancelRequest is a recorded request to cancel an order: who asked, when,
// and which signal a running order gets. A worker signals a running order
// only when it finds one of these for it (DESIGN §4.7): the NATS control
// message that follows is a wake-up, never the authority.
type CancelRequest struct {
	OrderID     uuid.UUID
	Host        string
	Actor       string
	Signal      string
	RequestedAt time.Time
}

// RequestCancel records actor's request to cancel order id with signal and
// returns the status the order had, all in one transaction:
//   - queued: the order is now canceled and never starts;
//   - running: the request is recorded for the worker, which the caller
//     then wakes up; the status stays running until the worker reports;
//   - terminal (canceled included): nothing is recorded.
//
// Every recorded request is also a cancel_requested event in the order's
// history, with the actor and the signal.
func (s *Store) RequestCancel(ctx context.Context, id uuid.UUID, actor, signal string) (st order.Status, err error) {
	doing := "cancel order " + id.String()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return "", translate(doing, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	var status, host string
	// FOR UPDATE: a claim running at the same moment waits, so a queued
	// order is either canceled here or claimed first, never both.
	err = tx.QueryRow(ctx, `SELECT status, host FROM orders WHERE id = $1 FOR UPDATE`, id).Scan(&status, &host)
	if err != nil {
		return "", translate(doing, err)
	}
	st = order.Status(status)
	if st != order.StatusQueued && st != order.StatusRunning {
		return st, tx.Rollback(ctx)
	}
	const record = `WITH r AS (
	INSERT INTO cancel_requests (order_id, host, actor, signal) VALUES ($1, $2, $3, $4)
	ON CONFLICT (order_id) DO UPDATE SET actor = excluded.actor, signal = excluded.signal, requested_at = now()
	RETURNING requested_at
)
INSERT INTO order_events (order_id, at, type, status, actor, detail)
SELECT $1, requested_at, 'cancel_requested', $5, $3, jsonb_build_object('signal', $4::text) FROM r`
	if _, err = tx.Exec(ctx, record, id, host, actor, signal, status); err != nil {
		return "", translate(doing, err)
	}
	if st == order.StatusQueued {
		const cancel = `WITH u AS (
	UPDATE orders SET status = 'canceled', finished_at = now(), error = $2
	WHERE id = $1 AND status = 'queued'
	RETURNING id, finished_at, attempt
)
INSERT INTO order_events (order_id, at, type, status, actor, detail)
SELECT id, finished_at, 'canceled', 'canceled', $3, jsonb_build_object('reason', $2::text, 'attempt', attempt) FROM u`
		if _, err = tx.Exec(ctx, cancel, id, "canceled by "+actor, actor); err != nil {
			return "", translate(doing, err)
		}
	}
	if err = tx.Commit(ctx); err != nil {
		return "", translate(doing, err)
	}
	return st, nil
}

// CancelRequestOf returns the recorded cancel request of order id, or
// order.ErrNotFound when nobody asked to cancel it.
func (s *Store) CancelRequestOf(ctx context.Context, id uuid.UUID) (*CancelRequest, error) {
	r := CancelRequest{OrderID: id}
	err := s.pool.QueryRow(ctx, `SELECT host, actor, signal, requested_at FROM cancel_requests WHERE order_id = $1`, id).
		Scan(&r.Host, &r.Actor, &r.Signal, &r.RequestedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, order.ErrNotFound
	}
	if err != nil {
		return nil, translate(fmt.Sprintf("read cancel request of order %s", id), err)
	}
	return &r, nil
}
