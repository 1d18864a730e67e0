package postgres

import (
	"context"
	"time"
)

// QueueAges returns, for each host with queued orders, how long the oldest
// of them has waited. A deep queue that moves is a busy host; a queue whose
// head stays put is a host that is offline or stuck, which depth alone
// cannot tell apart (the queue-age alert, docs/observability.md). A
// host's oldest queued order is its lowest id (UUIDv7: submission order),
// found in active_orders; only those few rows are read from orders.
func (s *Store) QueueAges(ctx context.Context) (map[string]time.Duration, error) {
	rows, err := s.pool.Query(ctx, `SELECT h.host, extract(epoch FROM now() - o.submitted_at)::float8
		FROM (SELECT DISTINCT ON (host) host, id FROM active_orders WHERE status = 'queued' ORDER BY host, id) h
		JOIN orders o ON o.id = h.id`)
	if err != nil {
		return nil, translate("measure queue ages", err)
	}
	defer rows.Close()
	out := map[string]time.Duration{}
	for rows.Next() {
		var h string
		var secs float64
		if err := rows.Scan(&h, &secs); err != nil {
			return nil, translate("measure queue ages", err)
		}
		out[h] = time.Duration(secs * float64(time.Second))
	}
	return out, translate("measure queue ages", rows.Err())
}

// UnpublishedBacklog counts the orders recorded but not yet known to be in
// their host's stream and returns the age of the oldest: the reconciler's
// work. Every order is in it for the ~50 ms until its mark is deleted;
// one that stays there for minutes was not republished.
func (s *Store) UnpublishedBacklog(ctx context.Context) (int, time.Duration, error) {
	var n int
	var secs float64
	err := s.pool.QueryRow(ctx, `SELECT count(*), coalesce(extract(epoch FROM now() - min(submitted_at)), 0)::float8
		FROM unpublished`).Scan(&n, &secs)
	return n, time.Duration(secs * float64(time.Second)), translate("measure the unpublished backlog", err)
}
