package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// Maintenance is a host an admin put in maintenance: while it is, new
// orders for the host are refused (intake.Service.Submit); those queued
// or running are left alone.
type Maintenance struct {
	Host   string    `json:"host"`
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
	By     string    `json:"by"`
}

// StartMaintenance puts host in maintenance, by the principal by, and
// returns its row. reason nil keeps a host already in maintenance as it
// is (its reason, since and by; a host not in it gets an empty reason);
// a reason (an empty one too) replaces the one recorded, and by becomes
// the principal who said it. A host already in maintenance keeps its
// start either way. The same statement adds the switch to
// host_maintenance_log, for auditors, when it changed something: a host
// put in maintenance, or its reason changed; a repeated switch that
// changes nothing writes nothing, as an off for a host not in it.
func (s *Store) StartMaintenance(ctx context.Context, host string, reason *string, by string) (Maintenance, error) {
	m := Maintenance{Host: host}
	var err error
	// Twice at most: a row another replica inserts after this statement's
	// snapshot is neither updated (nothing to change) nor seen by prev;
	// the next statement sees it.
	for range 2 {
		err = s.pool.QueryRow(ctx, `WITH prev AS (SELECT reason, since, by FROM host_maintenance WHERE host = $1),
			m AS (
				INSERT INTO host_maintenance (host, reason, by) VALUES ($1, coalesce($2::text, ''), $3)
				ON CONFLICT (host) DO UPDATE SET reason = excluded.reason, by = excluded.by
					WHERE $2::text IS NOT NULL AND host_maintenance.reason <> excluded.reason
				RETURNING reason, since, by),
			logged AS (INSERT INTO host_maintenance_log (host, by, action, reason) SELECT $1, $3, 'on', reason FROM m)
			SELECT reason, since, by FROM m
			UNION ALL SELECT reason, since, by FROM prev WHERE NOT EXISTS (SELECT FROM m)`, host, reason, by).
			Scan(&m.Reason, &m.Since, &m.By)
		if !errors.Is(err, pgx.ErrNoRows) {
			break
		}
	}
	m.Since = m.Since.UTC()
	return m, translate("put host in maintenance", err)
}

// EndMaintenance takes host out of maintenance, by the principal by: the
// row it had, and whether there was one. The same statement adds the
// switch to host_maintenance_log (with the reason that ended), for
// auditors; a host that was not in maintenance adds nothing.
func (s *Store) EndMaintenance(ctx context.Context, host, by string) (Maintenance, bool, error) {
	m := Maintenance{Host: host}
	err := s.pool.QueryRow(ctx, `WITH m AS (DELETE FROM host_maintenance WHERE host = $1 RETURNING reason, since, by),
		logged AS (INSERT INTO host_maintenance_log (host, by, action, reason) SELECT $1, $2, 'off', reason FROM m)
		SELECT reason, since, by FROM m`, host, by).
		Scan(&m.Reason, &m.Since, &m.By)
	if errors.Is(err, pgx.ErrNoRows) {
		return m, false, nil
	}
	if err != nil {
		return m, false, translate("take host out of maintenance", err)
	}
	m.Since = m.Since.UTC()
	return m, true, nil
}

// HostsInMaintenance are the hosts in maintenance, by name.
func (s *Store) HostsInMaintenance(ctx context.Context) (map[string]Maintenance, error) {
	rows, err := s.pool.Query(ctx, `SELECT host, reason, since, by FROM host_maintenance`)
	if err != nil {
		return nil, translate("read the hosts in maintenance", err)
	}
	defer rows.Close()
	out := map[string]Maintenance{}
	for rows.Next() {
		var m Maintenance
		if err := rows.Scan(&m.Host, &m.Reason, &m.Since, &m.By); err != nil {
			return nil, translate("read the hosts in maintenance", err)
		}
		m.Since = m.Since.UTC()
		out[m.Host] = m
	}
	return out, translate("read the hosts in maintenance", rows.Err())
}

// DeleteMaintenanceLogBefore removes up to limit rows of
// host_maintenance_log older than t, and returns how many it removed.
// Retention runs it with the orders' and the rejections': the refusals a
// switch explains are rows of rejections, trimmed at the same age, and a
// host in maintenance longer than that keeps who put it there and since
// when in host_maintenance.
func (s *Store) DeleteMaintenanceLogBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM host_maintenance_log WHERE id = ANY(ARRAY(
		SELECT id FROM host_maintenance_log WHERE at < $1 ORDER BY id LIMIT $2))`, t, limit)
	if err != nil {
		return 0, translate("delete old maintenance switches", err)
	}
	return tag.RowsAffected(), nil
}
