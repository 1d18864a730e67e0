package api

import (
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/runbook"
)

// handleRunbookHistory is GET /v1/runbooks/{name}/history: the runbook's
// runs, newest first, refused ones included, as orders (limit, cursor as
// GET /v1/orders). History is PostgreSQL's, never the file's, so
// concurrent runs cannot lose or interleave it. A principal sees its own
// runs unless it sees every order (admin, auditor).
func (s *Server) handleRunbookHistory(w http.ResponseWriter, r *http.Request) {
	if _, _, err := s.runbookSource(); err != nil {
		s.writeError(w, r, err)
		return
	}
	name := chi.URLParam(r, "name")
	if !runbook.ValidName(name) {
		s.writeError(w, r, notFound("Runbook not found: "+printableName(name)))
		return
	}
	f := postgres.Filter{Runbook: name, Limit: 50}
	q := r.URL.Query()
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			s.writeError(w, r, order.FieldError(order.CodeInvalid, "limit", "limit must be between 1 and 1000"))
			return
		}
		f.Limit = n
	}
	if v := q.Get("cursor"); v != "" {
		id, err := uuid.Parse(v)
		if err != nil {
			s.writeError(w, r, order.FieldError(order.CodeInvalid, "cursor", "cursor is not valid"))
			return
		}
		f.Cursor = &id
	}
	list, next, err := s.Store.ListOrders(r.Context(), scoped(r, f))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	resp := OrderList{Orders: make([]Order, len(list))}
	for i, o := range list {
		resp.Orders[i] = toResponse(o)
	}
	if next != nil {
		c := next.String()
		resp.NextCursor = &c
	}
	encode(w, http.StatusOK, resp)
}
