package postgres

import (
	"context"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// PublishGeneration is the publish generation the database holds
// (restore_mark): how many times an API raised it, the last value copied
// to NATS (queue.PostgresMark) included.
func (s *Store) PublishGeneration(ctx context.Context) (uint64, error) {
	var g int64
	err := s.pool.QueryRow(ctx, `SELECT generation FROM restore_mark`).Scan(&g)
	return uint64(g), translate("read the publish generation", err)
}

// RaisePublishGeneration raises the publish generation past both its
// value and past, and returns the new value. The API raises it after
// publish marks were cleared, then copies it to NATS: committed first
// here, the value NATS holds is never above the database's unless the
// database went back in time.
func (s *Store) RaisePublishGeneration(ctx context.Context, past uint64) (uint64, error) {
	var g int64
	err := s.pool.QueryRow(ctx, `UPDATE restore_mark SET generation = greatest(generation, $1) + 1, marked_at = now()
		RETURNING generation`, int64(past)).Scan(&g)
	return uint64(g), translate("raise the publish generation", err)
}

// HoldsNoOrders reports whether the database holds no order at all: a new
// one, when its publish generation was never raised either (the API then
// tells it from a restored one, intake/restore.go).
func (s *Store) HoldsNoOrders(ctx context.Context) (bool, error) {
	var none bool
	err := s.pool.QueryRow(ctx, `SELECT NOT EXISTS (SELECT 1 FROM orders)`).Scan(&none)
	return none, translate("look for orders", err)
}

// StillUnpublished returns those of ids whose publish marks are still in
// unpublished.
func (s *Store) StillUnpublished(ctx context.Context, ids []uuid.UUID) ([]uuid.UUID, error) {
	rows, err := s.pool.Query(ctx, `SELECT id FROM unpublished WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, translate("look up publish marks", err)
	}
	left, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	return left, translate("look up publish marks", err)
}
