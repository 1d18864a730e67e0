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
// returns its row. A host already in it keeps its start; its reason
// becomes reason and by the principal who said it last. The same
// statement adds the switch to host_maintenance_log, for auditors.
func (s *Store) StartMaintenance(ctx context.Context, host, reason, by string) (Maintenance, error) {
	m := Maintenance{Host: host}
	err := s.pool.QueryRow(ctx, `WITH m AS (
			INSERT INTO host_maintenance (host, reason, by) VALUES ($1, $2, $3)
			ON CONFLICT (host) DO UPDATE SET reason = excluded.reason, by = excluded.by
			RETURNING reason, since, by),
		logged AS (INSERT INTO host_maintenance_log (host, by, action, reason) SELECT $1, $3, 'on', reason FROM m)
		SELECT reason, since, by FROM m`, host, reason, by).Scan(&m.Reason, &m.Since, &m.By)
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
