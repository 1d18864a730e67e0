package api

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
)

// maxFanOut bounds how many orders one request may create.
const maxFanOut = 1000

// Batch is a fan-out: its orders, the count of orders per status, and the
// hosts that got no order, each with the reason (counted as "refused").
type Batch struct {
	BatchID uuid.UUID      `json:"batch_id"`
	Counts  map[string]int `json:"counts"`
	Orders  []Order        `json:"orders"`
	Refused []HostRefusal  `json:"refused,omitempty"`
	// Replayed, in a keyed fan-out's answer, lists the orders an earlier
	// fan-out with the key recorded (a retry found them and made none
	// there); the others are new. Absent when none is, and from GET
	// /v1/batches/{id}: a listing is no retry.
	Replayed []uuid.UUID `json:"replayed,omitempty"`
}

// HostRefusal is one host of a fan-out that the intake refused (policy,
// validation): the batch goes on for the other hosts.
type HostRefusal struct {
	Host  string      `json:"host"`
	Error ErrorDetail `json:"error"`
}

// fanOut creates one order per host named or matched by the globs in
// hosts, all under one batch id. Literal names are taken as given (the host
// may come online later); globs match the hosts known now. Every host is
// tried: each gets an order or a refusal in the answer, since a policy may
// allow a command on some hosts and not on others. When no host got an
// order, the answer is the first refusal, with every host's in details.
//
// correlation is the request's X-Correlation-Id, given to each order
// whose template names none (correlate, host by host: what a key binds
// is each host's own request).
func (s *Server) fanOut(w http.ResponseWriter, r *http.Request, tmpl *order.Order, correlation string, hosts []string, wait time.Duration) {
	if tmpl.Host != "" {
		s.writeError(w, r, order.FieldError(order.CodeInvalid, "hosts", "give either host or hosts, not both"))
		return
	}
	batch := order.NewID()
	if tmpl.IdempotencyKey != "" {
		// A keyed fan-out's batch is its key's: a retry after its API died
		// part-way puts the hosts it had not reached in the same batch as
		// those it had, so the answered batch lists them all.
		batch = uuid.NewSHA1(fanOutBatches, []byte(principalOf(r).Name+"\x00"+tmpl.IdempotencyKey))
	}
	recorded := s.recordedHosts(principalOf(r).Name, tmpl.IdempotencyKey, batch)
	targets, err := s.expandHosts(r.Context(), hosts, recorded)
	if order.ErrorCode(err) == order.CodeTooLarge && recorded != nil && len(hosts) <= maxFanOut {
		// The globs match more hosts than one fan-out may reach now (the
		// fleet grew since the first try): a retry is answered with the
		// orders its key recorded for the hosts its patterns name, what
		// the first answer said, rather than refused.
		if prev := s.recordedTargets(r.Context(), hosts, recorded); len(prev) > 0 {
			targets, err = prev, nil
		}
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var (
		stored  []*order.Order
		refused []HostRefusal
		first   error
	)
	orders := fanOutOrders(tmpl, correlation, batch, targets)
	var events <-chan queue.Event
	if wait > 0 {
		// One wait, for all its orders: held before any is recorded.
		release, err := s.HoldStream(principalOf(r).Name)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		defer release()
		// Registered before any order is published, so that no finished
		// event is missed; PostgreSQL is polled as well.
		ids := make([]uuid.UUID, len(orders))
		for i, o := range orders {
			ids[i] = o.ID
		}
		if ch, stop, err := s.events.waitAll(s.Queue.Conn(), targets, ids); err == nil {
			defer stop()
			events = ch
		}
	}
	// Replayed when every order answered is one an earlier fan-out with
	// the key recorded: the retry made none (replayedHeader). Which ones
	// are is said per order (Batch.Replayed), so a retry that reached a
	// host more tells its new orders from its recorded ones.
	replayed := true
	var old []uuid.UUID
	for i, res := range s.submitEach(r, orders) {
		h, got, err := targets[i], res.order, res.err
		var np *intake.ErrNotPublished
		if err != nil && !errors.As(err, &np) {
			if first == nil {
				first = err
			}
			refused = append(refused, HostRefusal{Host: h, Error: errorDetail(err)})
			s.logger.Info("fan-out host refused", "batch_id", batch, "host", h, "principal", principalOf(r).Name, "error", err)
			var e *order.Error
			if errors.As(err, &e) && statusOf(e.Code) < 500 {
				// The row names the refused host in request.host, as a
				// single order's does: docs/sql.md's query of a host's
				// refusals (request->>'host') found no fan-out's.
				s.audit(r, statusOf(e.Code), &order.Error{Code: e.Code, Message: "host " + h + ": " + e.Message}, func() map[string]any {
					rr, _ := r.Context().Value(redactedKey{}).(map[string]any)
					rr = maps.Clone(rr)
					if rr == nil {
						rr = map[string]any{}
					}
					rr["host"] = h
					return rr
				})
			}
			continue
		}
		if got == nil || got.ID == orders[i].ID {
			replayed = false
		} else {
			old = append(old, got.ID)
		}
		stored = append(stored, got)
	}
	if len(stored) == 0 {
		var e *order.Error
		if !errors.As(first, &e) {
			s.writeError(w, r, first)
			return
		}
		details := maps.Clone(e.Details)
		if details == nil {
			details = map[string]any{}
		}
		details["refused"] = refused
		// Each host's refusal is audited above; this answer is not again.
		encode(w, statusOf(e.Code), ErrorBody{Error: ErrorDetail{Code: e.Code, Message: e.Message, Details: details}})
		return
	}
	batch = batchOf(batch, stored)
	if wait > 0 {
		if err := s.awaitBatch(r.Context(), batch, events, wait); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	setCorrelation(w.Header(), stored...)
	s.writeFanOut(w, r, batch, stored, refused, old, replayed)
}

// fanOutBatches is the namespace of the batch ids of keyed fan-outs.
var fanOutBatches = uuid.MustParse("0193a5c4-0000-7000-8000-6f7264657231")

// fanOutParallel bounds how many hosts of one fan-out are submitted at
// once. Each submission waits on a PostgreSQL commit and a JetStream
// PubAck, both fsynced: one host after the other, a fan-out to 1,000 hosts
// took 4.7 s (docs/benchmarks.md, "Fleet"); in parallel the waits overlap.
const fanOutParallel = 16

type submitted struct {
	order *order.Order
	err   error
}

// submitEach submits one order per target host, several at a time, and
// returns the outcomes in the targets' order. Hosts are independent: each
// host's orders keep their own order whatever the others do.
// fanOutOrders makes the fan-out's order for each of targets from tmpl,
// with the request's X-Correlation-Id (correlate).
func fanOutOrders(tmpl *order.Order, correlation string, batch uuid.UUID, targets []string) []*order.Order {
	out := make([]*order.Order, len(targets))
	for i, h := range targets {
		o := *tmpl // the template's slices and maps are only read
		o.ID, o.Host, o.BatchID = order.NewID(), h, &batch
		if tmpl.IdempotencyKey != "" {
			o.IdempotencyKey = tmpl.IdempotencyKey + "/" + h
		}
		correlate(&o, correlation)
		out[i] = &o
	}
	return out
}

func (s *Server) submitEach(r *http.Request, orders []*order.Order) []submitted {
	out := make([]submitted, len(orders))
	sem := make(chan struct{}, fanOutParallel)
	var wg sync.WaitGroup
	for i, o := range orders {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			got, err := s.Intake.Submit(r.Context(), principalOf(r), o)
			out[i] = submitted{order: got, err: err}
		}()
	}
	wg.Wait()
	return out
}

// awaitBatch waits until the batch's orders are all finished, up to wait:
// woken by their finished events, with PostgreSQL polled each second as
// well (events can be missed across a cluster, and a retried fan-out's
// orders are an earlier batch's, whose events nobody registered for).
// Polled alone every 100 ms, 300 waiting fan-outs kept PostgreSQL's
// connections busy and slowed every other request. As awaitFinish, it
// checks the request's credential every credentialRecheck, and returns
// errCredentialGone when it stopped working.
func (s *Server) awaitBatch(ctx context.Context, batch uuid.UUID, events <-chan queue.Event, wait time.Duration) error {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	checked := time.Now()
	for {
		if now := time.Now(); now.Sub(checked) >= credentialRecheck {
			if s.credentialGone(ctx) {
				return errCredentialGone("batch_id", batch)
			}
			checked = now
		}
		list, _, err := s.Store.ListOrders(ctx, postgres.Filter{Batch: &batch, Limit: maxFanOut, Lean: true})
		if err == nil && allTerminal(list) {
			return nil
		}
	sleep:
		for {
			select {
			case ev := <-events:
				if order.Status(ev.Status).Terminal() {
					break sleep
				}
			case <-poll.C:
				break sleep
			case <-deadline.C:
				return nil
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// batchOf is the batch a fan-out answers with: its own, unless every
// order came back from an earlier fan-out with the same Idempotency-Key (a
// retry), which answers with that fan-out's batch.
func batchOf(batch uuid.UUID, stored []*order.Order) uuid.UUID {
	prev := stored[0].BatchID
	if prev == nil {
		return batch
	}
	for _, o := range stored {
		if o.BatchID == nil || *o.BatchID != *prev {
			return batch
		}
	}
	return *prev
}

// writeFanOut answers a fan-out with its orders as they are now. A host
// whose Idempotency-Key was used before answers with its first order,
// which belongs to the earlier batch: old lists those orders, and
// replayed (every order is one) marks the answer with replayedHeader.
func (s *Server) writeFanOut(w http.ResponseWriter, r *http.Request, batch uuid.UUID, stored []*order.Order, refused []HostRefusal,
	old []uuid.UUID, replayed bool) {
	list, _, err := s.Store.ListOrders(r.Context(), postgres.Filter{Batch: &batch, Limit: maxFanOut, Lean: true})
	if err != nil {
		s.writeError(w, r, recordedBatch(batch, err))
		return
	}
	byID := make(map[uuid.UUID]*order.Order, len(list))
	for _, o := range list {
		byID[o.ID] = o
	}
	resp := Batch{BatchID: batch, Counts: map[string]int{}, Orders: make([]Order, 0, len(stored)), Refused: refused, Replayed: old}
	final := make([]*order.Order, 0, len(stored))
	for _, o := range stored {
		if cur, ok := byID[o.ID]; ok {
			o = cur
		} else if cur, err := s.Store.GetOrder(r.Context(), o.ID); err == nil {
			o = cur
		}
		final = append(final, o)
		resp.Counts[string(o.Status)]++
	}
	resp.Orders = make([]Order, len(final))
	if len(refused) > 0 {
		resp.Counts["refused"] = len(refused)
	}
	status := http.StatusAccepted
	if allTerminal(final) {
		status = http.StatusOK
	}
	setReplayed(w, replayed)
	s.endStreamed(w, r, recordedBatch(batch, s.writeOrders(r.Context(), w, status, resp, final, entries(resp.Orders), toResponse)))
}

// recordedBatch is err, the failure to answer a fan-out whose orders are
// recorded (batch), as a 503 that names the batch, when no part of the
// answer went out: its read of the orders, cut by the server's stop or
// failing with it. As recordedAnswer's single order, a bare 503 had a
// client without an Idempotency-Key send the fan-out again, to run
// every order twice.
func recordedBatch(batch uuid.UUID, err error) error {
	var sent *errAfterHeader
	if err == nil || errors.As(err, &sent) {
		return err
	}
	return &order.Error{Code: order.CodeUnavailable,
		Message: "orders recorded, but the answer could not be read: look the batch up by id; sent again without an Idempotency-Key they run again",
		Details: map[string]any{"batch_id": batch}, Err: err}
}

func allTerminal(list []*order.Order) bool {
	for _, o := range list {
		if !o.Status.Terminal() {
			return false
		}
	}
	return true
}

// recordedHosts returns the look-up of the hosts a keyed fan-out's
// earlier try recorded an order for under its key (nil without a key):
// the orders of the key's batch that principal sent under the key. The
// look-up reads them once, when first called (expandHosts, then
// recordedTargets after a refusal for too many hosts).
func (s *Server) recordedHosts(principal, key string, batch uuid.UUID) func(context.Context) ([]string, error) {
	if key == "" {
		return nil
	}
	var (
		read  bool
		hosts []string
		err   error
	)
	return func(ctx context.Context) ([]string, error) {
		if read {
			return hosts, err
		}
		read = true
		var list []*order.Order
		if list, _, err = s.Store.ListOrders(ctx, postgres.Filter{Batch: &batch, Principal: principal, Limit: maxFanOut, NoOutputs: true}); err != nil {
			return nil, err
		}
		for _, o := range list {
			if o.IdempotencyKey == key+"/"+o.Host {
				hosts = append(hosts, o.Host)
			}
		}
		return hosts, nil
	}
}

// recordedTargets returns the hosts recorded lists (recordedHosts) that
// patterns name literally or match, sorted; none when the look-up fails
// (the refusal it stands for then stands).
func (s *Server) recordedTargets(ctx context.Context, patterns []string, recorded func(context.Context) ([]string, error)) []string {
	hosts, err := recorded(ctx)
	if err != nil {
		return nil
	}
	var out []string
	for _, h := range hosts {
		for _, p := range patterns {
			if ok, _ := path.Match(p, h); ok { // a literal name matches itself
				out = append(out, h)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// expandHosts returns the hosts patterns name: literal names as given,
// globs matched against the known hosts. recorded, when not nil, adds the
// hosts the request's idempotency key recorded orders for (recordedHosts)
// to the known ones: a retry's glob matches the hosts its first try
// matched even when a host has been forgotten since, and each of them is
// answered with its recorded order (the retry made none), not refused
// because the glob now matches nothing or runs on fewer hosts than the
// first try's answer said.
func (s *Server) expandHosts(ctx context.Context, patterns []string, recorded func(context.Context) ([]string, error)) ([]string, error) {
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
		if recorded != nil {
			hosts, err := recorded(ctx)
			if err != nil {
				return err
			}
			for _, h := range hosts {
				seen[h] = true
			}
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
		matched := false
		for _, h := range known {
			if ok, _ := path.Match(p, h); ok {
				set[h], matched = true, true
			}
		}
		if !matched {
			// The other patterns' hosts alone are not what was asked for
			// (a typo in one pattern would pass unnoticed).
			return nil, order.FieldError(order.CodeUnprocessable, "hosts", "host pattern %q matches no known host", p)
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

func (s *Server) writeBatch(w http.ResponseWriter, r *http.Request, batch uuid.UUID, status int, noOutputs bool) {
	list, _, err := s.Store.ListOrders(r.Context(), scoped(r, postgres.Filter{Batch: &batch, Limit: maxFanOut, Lean: true, NoOutputs: noOutputs}))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if len(list) == 0 {
		s.writeError(w, r, notFound("batch not found"))
		return
	}
	slices.Reverse(list) // oldest first
	resp := Batch{BatchID: batch, Counts: map[string]int{}, Orders: make([]Order, len(list))}
	for _, o := range list {
		resp.Counts[string(o.Status)]++
	}
	if status == http.StatusAccepted && allTerminal(list) {
		status = http.StatusOK
	}
	if (r.Method == http.MethodGet || r.Method == http.MethodHead) && s.notModified(w, r, batchETag(list, noOutputs)) {
		return
	}
	if noOutputs {
		encode(w, status, noOutputBatch{BatchID: batch, Counts: resp.Counts, Orders: noOutputResponses(list)})
		return
	}
	s.encodeOrders(w, r, status, resp, list, entries(resp.Orders), toResponse)
}

// handleBatch is GET /v1/batches/{id}: a fan-out's orders and the count of
// orders per status (outputs as GET /v1/orders).
func (s *Server) handleBatch(w http.ResponseWriter, r *http.Request) {
	id, err := parseID(chi.URLParam(r, "id"))
	if err != nil {
		s.writeError(w, r, notFound("batch not found"))
		return
	}
	var f postgres.Filter
	q, err := queryOf(r, []string{"outputs"})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := outputsOf(q, &f); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeBatch(w, r, id, http.StatusOK, f.NoOutputs)
}
