package api

import (
	"net/http"

	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/runbook"
)

// handleRunbookHistory is GET /v1/runbooks/{name}/history: the runbook's
// runs, newest first, refused ones included, as orders (limit, cursor and
// outputs as GET /v1/orders). History is PostgreSQL's, never the file's, so
// concurrent runs cannot lose or interleave it. A principal sees its own
// runs unless it sees every order (admin, auditor).
func (s *Server) handleRunbookHistory(w http.ResponseWriter, r *http.Request) {
	src, _, err := s.runbookSource()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	name, err := runbookName(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if !runbook.ValidName(name) {
		s.writeError(w, r, runbookNotFound(src, name))
		return
	}
	f := postgres.Filter{Runbook: name, Limit: 50}
	q, err := queryOf(r, []string{"limit", "cursor", "outputs"})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := pageOf(q, &f); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := outputsOf(q, &f); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeOrderList(w, r, f)
}
