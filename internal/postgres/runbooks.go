package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderly-run/orderly/internal/order"
)

// scriptPayload is the stored form of a script order's pending inputs
// (orders.script): the body and the files, erased when the order is
// terminal by the orders_erase trigger (migrations 00006, 00024).
type scriptPayload struct {
	Body  []byte       `json:"body"`
	Files []order.File `json:"files"`
}

// scriptColumns returns the runbook, runbook_sha256 and script columns of
// an order (all NULL for one that runs no script).
func scriptColumns(s *order.Script) (runbook, sum *string, payload []byte, err error) {
	if s == nil {
		return nil, nil, nil, nil
	}
	runbook, sum = &s.Runbook, &s.SHA256
	if len(s.Body) > 0 {
		if payload, err = json.Marshal(scriptPayload{Body: s.Body, Files: s.Files}); err != nil {
			return nil, nil, nil, fmt.Errorf("encode script: %w", err)
		}
	}
	return runbook, sum, payload, nil
}

// scriptOf reads the script columns back.
func scriptOf(runbook, sum *string, payload []byte) (*order.Script, error) {
	if runbook == nil {
		return nil, nil
	}
	s := &order.Script{Runbook: *runbook}
	if sum != nil {
		s.SHA256 = *sum
	}
	if payload != nil {
		var p scriptPayload
		if err := json.Unmarshal(payload, &p); err != nil {
			return nil, err
		}
		s.Body, s.Files = p.Body, p.Files
	}
	return s, nil
}

// Delegation is what a sub-runbook token stands for: the principal a
// running script acts for, and the chain it is bound to.
type Delegation struct {
	OrderID       uuid.UUID // the order whose script holds the token
	Principal     string
	Kind          string // the principal's credential kind
	Roles         []string
	Claims        map[string][]string
	CorrelationID string
	Stack         []string // runbook file names, the holder's own last
	Hosts         []string // hosts running the chain: a sub-runbook may not queue behind its parent
}

// InsertDelegation stores a token for the script of d.OrderID; only its
// SHA-256 is kept. It is written before the order, so the token works
// from the script's first line; a delegation whose order never got
// recorded is deleted by the caller (DeleteDelegation) and never works
// anyway, since it is only good while its order runs.
func (s *Store) InsertDelegation(ctx context.Context, token string, d Delegation) error {
	sum := sha256.Sum256([]byte(token))
	claims, err := json.Marshal(d.Claims)
	if err != nil {
		return fmt.Errorf("encode claims: %w", err)
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO runbook_delegations
		(sha256, order_id, principal, kind, roles, claims, correlation_id, stack, hosts)
		VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)`,
		sum[:], d.OrderID, d.Principal, d.Kind, nonNilStrings(d.Roles), claims, d.CorrelationID, nonNilStrings(d.Stack), nonNilStrings(d.Hosts))
	return translate("insert runbook delegation", err)
}

// DeleteDelegation removes the token of an order that was never recorded.
func (s *Store) DeleteDelegation(ctx context.Context, orderID uuid.UUID) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM runbook_delegations WHERE order_id = $1`, orderID)
	return translate("delete runbook delegation", err)
}

// DeleteOrphanDelegationsBefore removes up to limit delegations made
// before t whose order was never recorded (an API that stopped between
// the two inserts) and returns how many it removed. They are inert, a
// token being good only while its order runs, but nothing else removes
// them: the trigger that does goes with the order.
func (s *Store) DeleteOrphanDelegationsBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM runbook_delegations WHERE sha256 IN (
		SELECT d.sha256 FROM runbook_delegations d
		WHERE d.created_at < $1 AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = d.order_id) LIMIT $2)`, t, limit)
	if err != nil {
		return 0, translate("delete orphan runbook delegations", err)
	}
	return tag.RowsAffected(), nil
}

// ErrNoDelegation is returned for a token that is unknown, or whose order
// is not running or ran past its timeout.
var ErrNoDelegation = errors.New("no live runbook delegation")

// LookupDelegation returns the delegation of token while its order is
// running and within its timeout: the token expires with the order.
func (s *Store) LookupDelegation(ctx context.Context, token string) (*Delegation, error) {
	sum := sha256.Sum256([]byte(token))
	var (
		d      Delegation
		claims []byte
	)
	err := s.pool.QueryRow(ctx, `SELECT d.order_id, d.principal, d.kind, d.roles, d.claims, d.correlation_id, d.stack, d.hosts
		FROM runbook_delegations d JOIN orders o ON o.id = d.order_id
		WHERE d.sha256 = $1 AND o.status = 'running'
		  AND now() < o.started_at + o.timeout_ms * interval '1 millisecond'`, sum[:]).
		Scan(&d.OrderID, &d.Principal, &d.Kind, &d.Roles, &claims, &d.CorrelationID, &d.Stack, &d.Hosts)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNoDelegation
	}
	if err != nil {
		return nil, translate("look up runbook delegation", err)
	}
	if err := json.Unmarshal(claims, &d.Claims); err != nil {
		return nil, fmt.Errorf("decode delegation claims: %w", err)
	}
	return &d, nil
}

// RecordRefusedRun records a runbook run that was refused before it could
// be queued (its principal lacks the runbook's required claims) as an
// order with status rejected and the reason in error, with its submitted
// and rejected events: a runbook's history shows refusals as stage0's did.
func (s *Store) RecordRefusedRun(ctx context.Context, o *order.Order, reason string) error {
	runbook, sum, _, err := scriptColumns(&order.Script{Runbook: o.Script.Runbook, SHA256: o.Script.SHA256})
	if err != nil {
		return err
	}
	policy, err := json.Marshal(o.Policy)
	if err != nil {
		return fmt.Errorf("encode policy: %w", err)
	}
	// Both events come from one INSERT, ordered: two data-modifying
	// statements of one query run in no set order, and "submitted" must
	// have the lower id (docs/sql.md: the outcome is the last event with
	// a status).
	const q = `WITH o AS (
	INSERT INTO orders (id, kind, host, status, command, env_names, timeout_ms, principal, source, correlation_id,
		policy, finished_at, error, runbook, runbook_sha256)
	VALUES ($1, 'script', $2, 'rejected', $3, $4, $5, $6, $7, $8, $9, now(), $10, $11, $12)
	RETURNING id, submitted_at
)
INSERT INTO order_events (order_id, at, type, status, actor, detail)
SELECT o.id, o.submitted_at, e.type, e.status, e.actor, e.detail FROM o,
	(VALUES (1, 'submitted', 'queued', $6, jsonb_build_object('source', $7::text)),
		(2, 'rejected', 'rejected', 'api', jsonb_build_object('reason', $10::text, 'attempt', 0))) AS e (n, type, status, actor, detail)
ORDER BY e.n`
	_, err = s.pool.Exec(ctx, q, o.ID, o.Host, o.Command, nonNilStrings(o.EnvNames), o.Timeout.Milliseconds(), o.Principal,
		o.Source, o.CorrelationID, policy, reason, runbook, sum)
	return translate("record refused runbook run", err)
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
