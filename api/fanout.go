package api

import (
	"context"
	"errors"
	"net/http"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
)

// maxFanOut bounds how many orders one request may create.
const maxFanOut = 1000

// Batch is a fan-out: its orders and the count of orders per status.
type Batch struct {
	BatchID uuid.UUID      `json:"batch_id"`
	Counts  map[string]int `json:"counts"`
	Orders  []Order        `json:"orders"`
}

// fanOut creates one order per host named or matched by the globs in
// hosts, all under one batch id. Literal names are taken as given (the host
// may come online later); globs match the hosts known now.
func (s *Server) fanOut(w http.ResponseWriter, r *http.Request, tmpl *order.Order, hosts []string, wait time.Duration) {
	if tmpl.Host != "" {
		s.writeError(w, r, order.FieldError(order.CodeInvalid, "hosts", "give either host or hosts, not both"))
		return
	}
	targets, err := s.expandHosts(r.Context(), hosts)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	batch := order.NewID()
	resp := Batch{BatchID: batch, Counts: map[string]int{}}
	for _, h := range targets {
		o := *tmpl
		o.ID, o.Host, o.BatchID = order.NewID(), h, &batch
		if tmpl.IdempotencyKey != "" {
			o.IdempotencyKey = tmpl.IdempotencyKey + "/" + h
		}
		stored, err := s.Intake.Submit(r.Context(), principalOf(r), &o)
		var np *intake.ErrNotPublished
		if err != nil && !errors.As(err, &np) {
			// Validation and policy are the same for every host but the
			// host itself: the first refusal refuses the rest.
			if len(resp.Orders) == 0 {
				s.writeError(w, r, err)
				return
			}
			s.logger.Warn("fan-out stopped", "batch_id", batch, "host", h, "error", err)
			break
		}
		resp.Orders = append(resp.Orders, toResponse(stored))
	}
	if wait > 0 {
		deadline := time.Now().Add(wait)
		for time.Now().Before(deadline) && r.Context().Err() == nil {
			list, _, err := s.Store.ListOrders(r.Context(), postgres.Filter{Batch: &batch, Limit: maxFanOut})
			if err == nil && allTerminal(list) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	s.writeBatch(w, r, batch, http.StatusAccepted)
}

func allTerminal(list []*order.Order) bool {
	for _, o := range list {
		if !o.Status.Terminal() {
			return false
		}
	}
	return true
}

func (s *Server) expandHosts(ctx context.Context, patterns []string) ([]string, error) {
	if len(patterns) > maxFanOut {
		return nil, order.FieldError(order.CodeTooLarge, "hosts", "more than %d hosts", maxFanOut)
	}
	var known []string
	loadKnown := func() error {
		if known != nil {
			return nil
		}
		rows, err := s.Store.Hosts(ctx)
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, h := range rows {
			seen[h.Host] = true
		}
		if online, err := s.Queue.OnlineHosts(ctx); err == nil {
			for h := range online {
				seen[h] = true
			}
		}
		known = make([]string, 0, len(seen))
		for h := range seen {
			known = append(known, h)
		}
		sort.Strings(known)
		return nil
	}
	set := map[string]bool{}
	for _, p := range patterns {
		if !strings.ContainsAny(p, "*?[") {
			if !order.ValidHost(p) {
				return nil, order.FieldError(order.CodeInvalid, "hosts", "host %q must be 1-128 characters of [A-Za-z0-9_-]", p)
			}
			set[p] = true
			continue
		}
		if _, err := path.Match(p, ""); err != nil || strings.ContainsAny(p, "./ >") {
			return nil, order.FieldError(order.CodeInvalid, "hosts", "host pattern %q is not a valid glob", p)
		}
		if err := loadKnown(); err != nil {
			return nil, err
		}
		for _, h := range known {
			if ok, _ := path.Match(p, h); ok {
				set[h] = true
			}
		}
	}
	if len(set) == 0 {
		return nil, order.FieldError(order.CodeUnprocessable, "hosts", "no known host matches %v", patterns)
	}
	if len(set) > maxFanOut {
		return nil, order.FieldError(order.CodeTooLarge, "hosts", "the patterns match more than %d hosts", maxFanOut)
	}
	out := make([]string, 0, len(set))
	for h := range set {
		out = append(out, h)
	}
	sort.Strings(out)
	return out, nil
}

func (s *Server) writeBatch(w http.ResponseWriter, r *http.Request, batch uuid.UUID, status int) {
	list, _, err := s.Store.ListOrders(r.Context(), scoped(r, postgres.Filter{Batch: &batch, Limit: maxFanOut}))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if len(list) == 0 {
		s.writeError(w, r, notFound("batch not found"))
		return
	}
	resp := Batch{BatchID: batch, Counts: map[string]int{}, Orders: make([]Order, 0, len(list))}
	for i := len(list) - 1; i >= 0; i-- {
		resp.Counts[string(list[i].Status)]++
		resp.Orders = append(resp.Orders, toResponse(list[i]))
	}
	if status == http.StatusAccepted && allTerminal(list) {
		status = http.StatusOK
	}
	encode(w, status, resp)
}

// handleBatch is GET /v1/batches/{id}: a fan-out's orders and the count of
// orders per status.
func (s *Server) handleBatch(w http.ResponseWriter, r *http.Request) {
	id, err := uuid.Parse(chi.URLParam(r, "id"))
	if err != nil {
		s.writeError(w, r, notFound("batch not found"))
		return
	}
	s.writeBatch(w, r, id, http.StatusOK)
}
