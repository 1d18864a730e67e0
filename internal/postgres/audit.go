package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderly-run/orderly/internal/order"
)

// Rejection is one refused request, recorded for the audit trail. Request
// must already be redacted: no env values, no tokens.
type Rejection struct {
	Principal string
	ClientIP  string
	Source    string
	Method    string
	Path      string
	Status    int
	Code      string
	Reason    string
	Request   map[string]any
	// Submission, when set, is the order id the refused submission would
	// have had, when that id is the submission's own (a NATS
	// submission's: its stored message's, which every replica that takes
	// it up computes alike). Recorded in Request as order_id, so that a
	// later take-up of the same submission can supersede the row
	// (DeleteSubmissionRejections); nothing is recorded when that order
	// exists already: the submission was accepted meanwhile.
	Submission uuid.UUID
}

// RecordRejection stores a refused request, made storable first: a
// request refused for carrying NUL or invalid UTF-8 must not escape the
// audit by failing the insert.
func (s *Store) RecordRejection(ctx context.Context, r Rejection) error {
	_, err := s.RecordRejectionID(ctx, r)
	return err
}

// RecordRejectionID is RecordRejection, returning the row's id for
// DeleteRejection (0 when nothing was recorded: r.Submission's order
// exists).
func (s *Store) RecordRejectionID(ctx context.Context, r Rejection) (int64, error) {
	if r.Submission != uuid.Nil {
		m := make(map[string]any, len(r.Request)+1)
		for k, v := range r.Request {
			m[k] = v
		}
		m["order_id"] = r.Submission.String()
		r.Request = m
	}
	r = storable(r)
	req, err := json.Marshal(r.Request)
	if err != nil {
		return 0, fmt.Errorf("encode rejected request: %w", err)
	}
	if r.Source == "" {
		r.Source = "rest"
	}
	var id int64
	err = s.pool.QueryRow(ctx, `INSERT INTO rejections (principal, client_ip, source, method, path, status, code, reason, request)
		SELECT $1,$2,$3,$4,$5,$6,$7,$8,$9 WHERE $10::uuid IS NULL OR NOT EXISTS (SELECT 1 FROM orders WHERE id = $10::uuid)
		RETURNING id`, r.Principal, r.ClientIP, r.Source, r.Method, r.Path, r.Status, r.Code, r.Reason, req,
		nullUUID(r.Submission)).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return id, translate("record rejection", err)
}

// DeleteSubmissionRejections deletes what was recorded of submission's
// refusals (Rejection.Submission) at or after since: the NATS intake
// takes up again a submission an earlier take-up may have refused and
// not answered (a replica killed between its record and its answer), and
// judges it anew. Since is when the submission was stored, less a margin
// for the clocks of nats-server and PostgreSQL, so that the scan stays
// within the rows of its time (rejections_at).
func (s *Store) DeleteSubmissionRejections(ctx context.Context, submission uuid.UUID, since time.Time) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM rejections WHERE at >= $2 AND source = 'nats' AND request->>'order_id' = $1`,
		submission.String(), since)
	return tag.RowsAffected(), translate("delete a submission's rejections", err)
}

func nullUUID(id uuid.UUID) *uuid.UUID {
	if id == uuid.Nil {
		return nil
	}
	return &id
}

// DeleteRejection deletes the rejection recorded as id: a refusal that
// was recorded and then not given (the NATS intake's, when its replica
// lost the intake meanwhile).
func (s *Store) DeleteRejection(ctx context.Context, id int64) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM rejections WHERE id = $1`, id)
	return translate("delete rejection", err)
}

// HostRow is what PostgreSQL remembers of a worker host.
type HostRow struct {
	Host      string
	Version   string
	Instance  string
	FirstSeen time.Time
	LastSeen  time.Time
}

// TouchHost records that a worker for host is alive now.
func (s *Store) TouchHost(ctx context.Context, host, version, instance string) error {
	// Only as the host's owner (or of a host nobody took over): a worker
	// thawed or stopped after its successor took the host recorded itself
	// as the host's last instance and version, and its stop as the host's
	// last sighting, for the listing to show once the successor went.
	_, err := s.pool.Exec(ctx, `INSERT INTO hosts (host, version, instance) VALUES ($1,$2,$3)
		ON CONFLICT (host) DO UPDATE SET version = $2, instance = $3, last_seen = now()
		WHERE hosts.owner IN ('', $3)`, host, version, instance)
	return translate("touch host "+host, err)
}

// Hosts lists every host ever seen, or those of names when given.
func (s *Store) Hosts(ctx context.Context, names ...string) ([]HostRow, error) {
	rows, err := s.pool.Query(ctx, `SELECT host, version, instance, first_seen, last_seen FROM hosts
		WHERE coalesce(cardinality($1::text[]), 0) = 0 OR host = ANY($1) ORDER BY host`, names)
	if err != nil {
		return nil, translate("list hosts", err)
	}
	defer rows.Close()
	var out []HostRow
	for rows.Next() {
		var h HostRow
		if err := rows.Scan(&h.Host, &h.Version, &h.Instance, &h.FirstSeen, &h.LastSeen); err != nil {
			return nil, translate("list hosts", err)
		}
		out = append(out, h)
	}
	return out, translate("list hosts", rows.Err())
}

// QueueDepth counts the queued orders of host. Like every question about
// active orders it starts from active_orders (migration 00009), so it costs
// what the queue holds, whatever the history.
func (s *Store) QueueDepth(ctx context.Context, host string) (queued int, err error) {
	err = s.pool.QueryRow(ctx, `SELECT count(*) FROM active_orders WHERE host = $1 AND status = 'queued'`, host).Scan(&queued)
	return queued, translate("count queued orders", err)
}

// APIToken is a token created at runtime; only its hash is stored.
type APIToken struct {
	Name   string
	SHA256 string
	Roles  []string
}

// EnsureAPIToken stores a token hash under name unless one exists, and
// reports whether it created it.
func (s *Store) EnsureAPIToken(ctx context.Context, t APIToken) (bool, error) {
	tag, err := s.pool.Exec(ctx, `INSERT INTO api_tokens (name, sha256, roles) VALUES ($1,$2,$3) ON CONFLICT (name) DO NOTHING`, t.Name, t.SHA256, t.Roles)
	if err != nil {
		return false, translate("store api token", err)
	}
	return tag.RowsAffected() == 1, nil
}

// APITokens lists the runtime tokens.
func (s *Store) APITokens(ctx context.Context) ([]APIToken, error) {
	rows, err := s.pool.Query(ctx, `SELECT name, sha256, roles FROM api_tokens ORDER BY name`)
	if err != nil {
		return nil, translate("list api tokens", err)
	}
	defer rows.Close()
	var out []APIToken
	for rows.Next() {
		var t APIToken
		if err := rows.Scan(&t.Name, &t.SHA256, &t.Roles); err != nil {
			return nil, translate("list api tokens", err)
		}
		out = append(out, t)
	}
	return out, translate("list api tokens", rows.Err())
}

// ReplaceAPIToken stores a runtime token's hash and roles under its name,
// in place of any other (rotation); a token stored as it is stays as it
// was, its created_at included.
func (s *Store) ReplaceAPIToken(ctx context.Context, t APIToken) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO api_tokens (name, sha256, roles) VALUES ($1,$2,$3)
		ON CONFLICT (name) DO UPDATE SET sha256 = $2, roles = $3, created_at = now()
		WHERE (api_tokens.sha256, api_tokens.roles) IS DISTINCT FROM ($2, $3)`, t.Name, t.SHA256, t.Roles)
	return translate("replace api token", err)
}

// QueueDepths counts the queued orders of every known host (0 for one with
// none) and of every other host that has any. A known host's empty queue
// reads 0 rather than nothing, so its orderly_queue_depth series does not
// vanish when the queue drains (a graph shows 0, not a gap; an alert on
// absent() does not fire); a made-up host counts only while its orders
// wait.
func (s *Store) QueueDepths(ctx context.Context) (map[string]int, error) {
	rows, err := s.pool.Query(ctx, `SELECT host, sum(n)::int FROM (
		SELECT host, count(*) AS n FROM active_orders WHERE status = 'queued' GROUP BY host
		UNION ALL SELECT host, 0 FROM hosts) d GROUP BY host`)
	if err != nil {
		return nil, translate("count queues", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var h string
		var n int
		if err := rows.Scan(&h, &n); err != nil {
			return nil, translate("count queues", err)
		}
		out[h] = n
	}
	return out, translate("count queues", rows.Err())
}

// CurrentOrders returns, by host, the order running on it and the worker
// instance that claimed it, as the claim and the result commit them: the
// host's running order that is oldest in submission order, should a dead
// worker's still be there. The hosts listing takes a host's current order
// from here rather than from its worker's heartbeat, which is written
// every nats.heartbeat only and lagged the host by up to that.
func (s *Store) CurrentOrders(ctx context.Context, names ...string) (map[string]Running, error) {
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT ON (a.host) a.host, a.id, o.worker
		FROM active_orders a JOIN orders o ON o.id = a.id
		WHERE a.status = 'running' AND (coalesce(cardinality($1::text[]), 0) = 0 OR a.host = ANY($1))
		ORDER BY a.host, a.id`, names)
	if err != nil {
		return nil, translate("list running orders", err)
	}
	defer rows.Close()
	out := map[string]Running{}
	for rows.Next() {
		var h string
		var r Running
		if err := rows.Scan(&h, &r.ID, &r.Worker); err != nil {
			return nil, translate("list running orders", err)
		}
		out[h] = r
	}
	return out, translate("list running orders", rows.Err())
}

// Running is a host's running order and the worker instance that claimed
// it.
type Running struct {
	ID     uuid.UUID
	Worker string
}

// Audit rows identify a refused request; they need not keep all of it. A
// refusal for size would otherwise store up to a whole body per row.
const (
	auditMaxString = 1024
	auditMaxList   = 64
)

// storable makes a rejection insertable and bounded: PostgreSQL text and
// jsonb refuse NUL and invalid UTF-8, and a request refused for carrying
// them must not escape the audit by failing the insert, so such bytes
// become U+FFFD; long strings and lists are cut, saying how long they were.
func storable(rej Rejection) Rejection {
	rej.Principal, rej.ClientIP = storableString(rej.Principal), storableString(rej.ClientIP)
	rej.Method, rej.Path, rej.Reason = storableString(rej.Method), storableString(rej.Path), storableString(rej.Reason)
	if rej.Request != nil {
		rej.Request, _ = storableValue(rej.Request).(map[string]any)
	}
	return rej
}

func storableString(s string) string {
	if len(s) > auditMaxString {
		s = s[:auditMaxString] + "…(" + strconv.Itoa(len(s)) + " bytes)"
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// cut keeps the first auditMaxList elements of a list, and says so.
func cut[T any](list []T, more func(n int) T) []T {
	if len(list) <= auditMaxList {
		return list
	}
	return append(list[:auditMaxList:auditMaxList], more(len(list)))
}

func storableValue(v any) any {
	switch x := v.(type) {
	case string:
		return storableString(x)
	case []string:
		x = cut(x, func(n int) string { return "…(" + strconv.Itoa(n) + " elements)" })
		out := make([]string, len(x))
		for i, s := range x {
			out[i] = storableString(s)
		}
		return out
	case []any:
		x = cut(x, func(n int) any { return "…(" + strconv.Itoa(n) + " elements)" })
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = storableValue(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[storableString(k)] = storableValue(e)
		}
		return out
	case map[string]string:
		out := make(map[string]string, len(x))
		for k, e := range x {
			out[storableString(k)] = storableString(e)
		}
		return out
	}
	return v
}

// ErrHostBusy is ForgetHost's refusal: the host has orders queued or
// running.
var ErrHostBusy = errors.New("host has orders queued or running")

// HostInMaintenanceError is ForgetHost's refusal of a host in
// maintenance: Maintenance is its row, who put it there and since when.
type HostInMaintenanceError struct {
	Maintenance Maintenance
}

func (e *HostInMaintenanceError) Error() string {
	return "host " + e.Maintenance.Host + " is in maintenance"
}

// ForgetHost deletes host from the hosts table (and with it its takeover
// state), unless it is in maintenance (a *HostInMaintenanceError) or has
// orders that may still run (ErrHostBusy). Its orders' history stays.
// found is false for a host PostgreSQL does not know.
//
// With abandonedBy set (an admin's name), the host's orders that may
// still run are settled first, in the same transaction: a running one
// becomes interrupted (its worker never came back to say how it ended),
// a queued one canceled, each with its event by abandonedBy; abandoned
// lists them, for the caller to log, count and announce as it does the
// orders it cancels.
func (s *Store) ForgetHost(ctx context.Context, host, abandonedBy string) (found bool, active int, abandoned []Abandoned, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The row lock orders this against a worker taking the host.
		if err := tx.QueryRow(ctx, `SELECT true FROM hosts WHERE host = $1 FOR UPDATE`, host).Scan(&found); err != nil {
			if err != pgx.ErrNoRows {
				return err
			}
		}
		// The maintenance check and the delete are one transaction under
		// host_maintenance's SHARE lock, which a switch's INSERT or DELETE
		// (ROW EXCLUSIVE) waits for and which waits for a switch in
		// progress: a check read before the transaction let a concurrent
		// `--maintenance on` in between, and the host was forgotten in
		// maintenance. A switch sent meanwhile goes in after the forget,
		// as if sent after it. The table, not the host: a host not yet in
		// maintenance has no row to lock. Switches and forgets are an
		// admin's, rare; the intake's reads (ACCESS SHARE) do not wait.
		if _, err := tx.Exec(ctx, `LOCK TABLE host_maintenance IN SHARE MODE`); err != nil {
			return err
		}
		m := Maintenance{Host: host}
		err := tx.QueryRow(ctx, `SELECT reason, since, by FROM host_maintenance WHERE host = $1`, host).Scan(&m.Reason, &m.Since, &m.By)
		switch {
		case err == nil:
			m.Since = m.Since.UTC()
			return &HostInMaintenanceError{Maintenance: m}
		case err != pgx.ErrNoRows:
			return err
		}
		if abandonedBy != "" {
			rows, err := tx.Query(ctx, abandonSQL, host, abandonedBy)
			if err != nil {
				return err
			}
			abandoned, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Abandoned, error) {
				var a Abandoned
				var st string
				err := row.Scan(&a.ID, &a.Principal, &st)
				a.Status = order.Status(st)
				return a, err
			})
			if err != nil {
				return err
			}
			active = len(abandoned)
		}
		var left int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM active_orders WHERE host = $1`, host).Scan(&left); err != nil {
			return err
		}
		if left > 0 {
			active = left
			return ErrHostBusy
		}
		_, err = tx.Exec(ctx, `DELETE FROM hosts WHERE host = $1`, host)
		return err
	})
	var inMaintenance *HostInMaintenanceError
	if errors.Is(err, ErrHostBusy) || errors.As(err, &inMaintenance) {
		return found, active, nil, err
	}
	if err != nil {
		return found, active, nil, translate("forget host "+host, err)
	}
	return found, active, abandoned, nil
}

// Abandoned is an order ForgetHost settled with its host: Status is
// interrupted for one that was running, canceled for one still queued.
type Abandoned struct {
	ID        uuid.UUID
	Principal string
	Status    order.Status
}

// abandonSQL settles the orders of host $1 that may still run, for
// ForgetHost: running ones interrupted, queued ones canceled, with their
// events by $2.
const abandonSQL = `WITH u AS (
	UPDATE orders SET status = CASE status WHEN 'running' THEN 'interrupted' ELSE 'canceled' END,
		finished_at = now(),
		error = CASE status
			WHEN 'running' THEN 'its host ' || host || ' was forgotten by ' || $2 || ' while it ran: its worker never came back to say how it ended'
			ELSE 'its host ' || host || ' was forgotten by ' || $2 || ' before it ran' END
	WHERE id IN (SELECT id FROM active_orders WHERE host = $1) AND status IN ('queued', 'running')
	RETURNING id, principal, status, finished_at, attempt, error
), e AS (
	INSERT INTO order_events (order_id, at, type, status, actor, detail)
	SELECT id, finished_at, status, status, $2, jsonb_build_object('reason', error, 'attempt', attempt) FROM u
)
SELECT id, principal, status FROM u ORDER BY id`
