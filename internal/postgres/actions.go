package postgres

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/orderly-run/orderly/internal/order"
)

// actionCols are the action columns of an order (migration 00007).
type actionCols struct {
	name    *string
	params  []byte
	secrets []byte
	names   []string
	limit   []byte
}

// actionColumns returns the action columns of an order (all NULL for one
// that runs no action). Secret values go only to action_secrets, which
// the orders_erase trigger clears when the order ends (migration 00024).
func actionColumns(a *order.Action) (actionCols, error) {
	if a == nil {
		return actionCols{}, nil
	}
	c := actionCols{name: &a.Name, names: nonNilStrings(a.SecretNames)}
	var err error
	params := a.Params
	if params == nil {
		params = map[string]string{}
	}
	if c.params, err = json.Marshal(params); err != nil {
		return c, fmt.Errorf("encode action params: %w", err)
	}
	if len(a.Secrets) > 0 {
		if c.secrets, err = json.Marshal(a.Secrets); err != nil {
			return c, fmt.Errorf("encode action secrets: %w", err)
		}
	}
	if l := a.Limit; l.Runs > 0 || l.ConcurrentPerHost > 0 {
		c.limit, err = json.Marshal(map[string]int64{"runs": int64(l.Runs), "per_ms": l.Per.Milliseconds(),
			"concurrent_per_host": int64(l.ConcurrentPerHost)})
		if err != nil {
			return c, fmt.Errorf("encode action limit: %w", err)
		}
	}
	return c, nil
}

// actionOf reads the action columns back (the limit is not read: it only
// matters at the insert).
func actionOf(name *string, params, secrets []byte, names []string) (*order.Action, error) {
	if name == nil {
		return nil, nil
	}
	a := &order.Action{Name: *name, SecretNames: names}
	if params != nil {
		if err := json.Unmarshal(params, &a.Params); err != nil {
			return nil, err
		}
	}
	if secrets != nil {
		if err := json.Unmarshal(secrets, &a.Secrets); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// actionLimited translates the orders_action_limit trigger's refusal
// (SQLSTATE OR429, seconds to wait in HINT) into rate_limited, or returns
// nil for any other error. An insert that succeeded returns at once: the
// target errors.As is handed escapes, one allocation per order.
func actionLimited(err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "OR429" {
		return nil
	}
	secs, _ := strconv.ParseInt(pgErr.Hint, 10, 64)
	secs = max(secs, 1)
	e := &order.Error{Code: order.CodeRateLimited, Message: pgErr.Message,
		Details: map[string]any{"reason": "action_limit", "retry_after_seconds": secs}}
	// DETAIL (migration 00029) says until when, or who holds the slot: a
	// refusal that says neither (a trigger before 00029, while a rolling
	// upgrade migrates) keeps the message and the seconds.
	switch k, v, _ := strings.Cut(pgErr.Detail, "="); k {
	case "retry_at":
		if at, err := time.Parse(time.RFC3339Nano, v); err == nil {
			e.Details["retry_at"] = at.UTC().Format(time.RFC3339Nano)
			e.Message += fmt.Sprintf("; it may run again in %d s (at %s)", secs, at.UTC().Format("15:04:05 UTC"))
		}
	case "held_by":
		if _, err := uuid.Parse(v); err == nil {
			e.Details["held_by"] = v
			e.Message += "; order " + v + " holds the slot: it may run again once that order ends"
		}
	}
	return e
}
