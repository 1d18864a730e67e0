package postgres

import (
	"context"
	"time"

	"github.com/google/uuid"
)

// Presence is an API process that binds orders to itself as their waiter
// (order.Order.Waiter): its instance id, and where it runs, for whoever
// reads api_presence.
type Presence struct {
	Instance uuid.UUID
	Hostname string
	PID      int
}

// RenewPresence records that p is alive for life from now, by
// PostgreSQL's clock (which the claim judges it by).
func (s *Store) RenewPresence(ctx context.Context, p Presence, life time.Duration) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO api_presence (instance, hostname, pid, alive_until)
		VALUES ($1, $2, $3, now() + $4::bigint * interval '1 microsecond')
		ON CONFLICT (instance) DO UPDATE SET alive_until = excluded.alive_until`,
		p.Instance, p.Hostname, p.PID, life.Microseconds())
	return translate("renew the API's presence", err)
}

// EndPresence records that the API process instance is gone: the orders
// still queued for its waiters are canceled at their claim from now on,
// and the rows of processes gone for a day are deleted.
func (s *Store) EndPresence(ctx context.Context, instance uuid.UUID) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM api_presence WHERE instance = $1 OR alive_until < now() - interval '1 day'`, instance)
	return translate("end the API's presence", err)
}
