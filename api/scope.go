package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
)

// seesAll reports whether p may read every order: the admin and auditor
// roles. Everyone else reads only the orders they submitted — arguments
// and output can be sensitive.
func seesAll(p auth.Principal) bool { return p.HasRole("admin") || p.HasRole("auditor") }

// pathOrder loads the order named by the {id} path parameter, if the
// requester may read it. Another principal's order is "not found", so
// order ids reveal nothing.
func (s *Server) pathOrder(r *http.Request) (*order.Order, error) {
	return s.readPathOrder(r, s.Store.GetOrder)
}

// pathOrderLean is pathOrder for an answer that streams the order: large
// kept outputs stay in the database (GetOrderLean).
func (s *Server) pathOrderLean(r *http.Request) (*order.Order, error) {
	return s.readPathOrder(r, s.Store.GetOrderLean)
}

// parseID reads an id of an order, a batch or a cursor: a UUID in its
// standard 36-character form only (uuid.Parse also takes urn:uuid:, braces
// and 32 bare hex digits, which the spec's format: uuid does not).
func parseID(s string) (uuid.UUID, error) {
	if len(s) != 36 {
		return uuid.Nil, errors.New("not a UUID in its 36-character form")
	}
	return uuid.Parse(s)
}

// readOrder reads one order: Store.GetOrder, or GetOrderLean for an answer
// that streams large kept outputs.
type readOrder func(ctx context.Context, id uuid.UUID) (*order.Order, error)

func (s *Server) readPathOrder(r *http.Request, read readOrder) (*order.Order, error) {
	id, err := parseID(chi.URLParam(r, "id"))
	if err != nil {
		return nil, order.ErrNotFound
	}
	o, err := read(r.Context(), id)
	if err != nil {
		return nil, err
	}
	if p := principalOf(r); !seesAll(p) && o.Principal != p.Name {
		return nil, order.ErrNotFound
	}
	return o, nil
}

// scoped restricts a filter to the requester's own orders unless they may
// read all.
func scoped(r *http.Request, f postgres.Filter) postgres.Filter {
	if p := principalOf(r); !seesAll(p) {
		f.Principal = p.Name
	}
	return f
}
