package api

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
)

// idempotencyKeyOf reads the Idempotency-Key header: printable text of
// 1 to 200 bytes (a fan-out appends "/<host>" to it for each order), sent
// once. Of two, the first was used silently; which one the client (or a
// proxy that added one) meant is anyone's guess, as for Authorization
// (oneAuthorization), so neither is.
func idempotencyKeyOf(r *http.Request) (string, error) {
	if n := len(r.Header.Values("Idempotency-Key")); n > 1 {
		return "", order.FieldError(order.CodeInvalid, "Idempotency-Key", "%d Idempotency-Key headers: send one", n)
	}
	k := r.Header.Get("Idempotency-Key")
	if k == "" && len(r.Header.Values("Idempotency-Key")) == 1 {
		// Sent, but empty: a client whose key came out empty (an unset
		// variable) means a keyed request, and taken as none its retry
		// would run again.
		return "", order.FieldError(order.CodeInvalid, "Idempotency-Key", "Idempotency-Key is empty: send a key, or leave the header out")
	}
	if len(k) > 200 || order.HasControl(k, false) {
		return "", order.FieldError(order.CodeInvalid, "Idempotency-Key", "Idempotency-Key must be printable text of at most 200 bytes")
	}
	return k, nil
}

// correlationHeader gives an order its correlation id when the body names
// none: the header a runbook chain already carries (stage0's), and the
// one gateways and tracing proxies set. X-Request-Id is not read: a proxy
// makes a new one for each request, an id of one hop, not of the work.
const correlationHeader = "X-Correlation-Id"

// correlationOf reads X-Correlation-Id from its values (an HTTP request's
// or a NATS message's): sent once, and printable text of at most 200
// bytes, as the body's correlation_id (order.Validate); "" when absent or
// empty. It is checked whenever it is sent, even when the body's field
// wins, so that a bad one is told, not dropped in silence.
func correlationOf(values []string) (string, error) {
	if n := len(values); n > 1 {
		return "", order.FieldError(order.CodeInvalid, correlationHeader, "%d %s headers: send one", n, correlationHeader)
	}
	if len(values) == 0 {
		return "", nil
	}
	v := values[0]
	if len(v) > order.MaxCorrelationBytes || order.HasControl(v, false) {
		return "", order.FieldError(order.CodeInvalid, correlationHeader,
			"%s must be printable text of at most %d bytes, as correlation_id", correlationHeader, order.MaxCorrelationBytes)
	}
	return v, nil
}

// correlate gives o the header's correlation id when its body named none
// (the body's field wins: it is what this request asked for, where a
// proxy may have added the header). What an Idempotency-Key binds is
// taken before, without it: the header says where a request comes from,
// not what it asks (as a runbook run's chain headers, runbookRequestSum),
// and a proxy that stamps each request with a new id would have made
// every retry a different request, refused as idempotency_key_reused.
func correlate(o *order.Order, id string) {
	if id == "" || o.CorrelationID != "" {
		return
	}
	if o.IdempotencyKey != "" && o.RequestSHA256 == nil {
		o.RequestSHA256 = o.RequestSum()
	}
	o.CorrelationID = id
}

// setCorrelation echoes, in an answer's X-Correlation-Id, the correlation
// id its orders recorded: the one the request gave them (its body's field
// or its header), or for a replayed order the first request's, which is
// what GET /v1/orders?correlation= finds. None when they have none, nor
// when a fan-out's differ (a retry's replayed hosts keep the first
// try's): not the order id either, an id no order holds, nor a new one as
// a runbook run makes for its chain, which would name a chain nothing in
// PostgreSQL belongs to.
func setCorrelation(h http.Header, orders ...*order.Order) {
	id := ""
	for _, o := range orders {
		switch {
		case o == nil:
		case o.CorrelationID == "" || id != "" && o.CorrelationID != id:
			return
		default:
			id = o.CorrelationID
		}
	}
	if id != "" {
		h[correlationHeader] = []string{id}
	}
}

func notFound(msg string) error { return order.Errorf(order.CodeNotFound, "%s", msg) }

// handleSubmit is POST /v1/orders: 202 with the queued order, or with a
// wait, 200 with the finished order (202 if it is still running then).
func (s *Server) handleSubmit(w http.ResponseWriter, r *http.Request) {
	set := s.Settings()
	wait, err := waitOf(r, set.MaxWait)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var req SubmitRequest
	if err := decode(r, set.MaxBodyBytes, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	// A refusal from here on is audited with the submission, redacted
	// (made only then).
	fail := func(err error) { s.writeErrorOf(w, r, err, func() map[string]any { return redact(&req) }) }
	o, err := req.toOrder()
	if err != nil {
		fail(err)
		return
	}
	o.Source = "rest"
	if o.IdempotencyKey, err = idempotencyKeyOf(r); err != nil {
		fail(err)
		return
	}
	correlation, err := correlationOf(r.Header.Values(correlationHeader))
	if err != nil {
		fail(err)
		return
	}
	if req.Hosts != nil && len(req.Hosts) == 0 && o.Host == "" {
		// "hosts": [] decodes to an empty list, where an absent one is nil:
		// it was sent, naming no host, and the single order's check below
		// would refuse host, a field the client never sent.
		fail(order.FieldError(order.CodeInvalid, "hosts", "hosts is empty: name at least one host or host pattern"))
		return
	}
	if len(req.Hosts) > 0 {
		// The fan-out audits each host's refusal with the submission.
		s.fanOut(w, r.WithContext(context.WithValue(r.Context(), redactedKey{}, redact(&req))), o, correlation, req.Hosts, wait)
		return
	}
	correlate(o, correlation)
	o.ID = order.NewID()
	final, err := s.submitOrder(r.Context(), principalOf(r), o, wait, s.Store.GetOrderLean)
	if err != nil {
		fail(err)
		return
	}
	setReplayed(w, final.ID != o.ID)
	status := http.StatusAccepted
	if final.Status.Terminal() {
		status = http.StatusOK
	}
	if wait > 0 && final.Status == order.StatusQueued {
		if note := s.noWorkerNote(r.Context(), final.Host); note != "" {
			w.Header().Set(workerHeader, note)
		}
	}
	// As GET /v1/orders/{id} answers it (a wait may end in a cancel);
	// streams a large kept output.
	respOf := func(o *order.Order) Order { return s.withCancellation(r.Context(), o) }
	setCorrelation(w.Header(), final)
	s.endStreamed(w, r, recordedAnswer(final, writeOrder(r.Context(), w, status, final, respOf, s.Store, outputSlice)))
}

// recordedAnswer is err, the failure to answer a submission whose order o
// is recorded, as a 503 that names o, when no part of the answer went
// out: a finished order's kept output read from PostgreSQL, cut by the
// server's stop or failing with it. A bare 503 ("the server is stopping:
// try again", "database unavailable") had a client without an
// Idempotency-Key submit the order again, to run twice.
func recordedAnswer(o *order.Order, err error) error {
	var sent *errAfterHeader
	if err == nil || errors.As(err, &sent) {
		return err
	}
	return &order.Error{Code: order.CodeUnavailable,
		Message: "order recorded, but its answer could not be read: look it up by id; sent again without an Idempotency-Key it runs again",
		Details: map[string]any{"order_id": o.ID}, Err: err}
}

// awaitFinish waits for the order's finished event, up to wait. Events are
// a fast path; PostgreSQL is polled as well, once a second, since core
// NATS events can be missed across a cluster. One timer, armed for the
// next poll or the deadline, whichever is first: a deadline timer and a
// poll ticker were twice the allocations (docs/benchmarks.md, "The sync
// submit, counted"). The timer is one of waitTimers: made for each wait,
// it was three allocations per synchronous order (docs/benchmarks.md,
// "The sync order's wait side"). A read that fails (PostgreSQL restarting)
// is tried again at the next poll: it does not end the wait, whose
// waiters would take the order for one that outlived it (the compat
// surfaces canceled it, running, and answered it timed out). Like a live
// stream, a wait checks its request's credential every credentialRecheck:
// one that stopped working ends it with errCredentialGone. The first read
// that finds the order past queued tells the intake (LeftQueue), whose
// batched DELETE of publish marks then skips it (docs/benchmarks.md, the
// thirty-second round), or, for the order of a submission that holds its
// mark (intake.SubmitAwaited), settles mark (the thirty-sixth round); a
// read that finds it still queued hands mark to the batch.
//
// An end handed over by this process's own worker (serve's) may carry
// the order as that worker's commit wrote it (queue.Event.Committed):
// then that order is the answer, and PostgreSQL is not read again. It is
// read back only while its outputs are below postgres.LeaveOutputsFrom,
// so it is the order GetOrder and GetOrderLean (read) both give; an end
// from the bus never carries one (eventHub.hear), and any other end (a
// cancel of a queued order, an interruption, a takeover, a result found
// written by a lost try) carries none and is read as before
// (docs/decisions.md, "A ?wait answered from its worker's commit").
func (s *Server) awaitFinish(ctx context.Context, id uuid.UUID, events <-chan queue.Event, wait time.Duration, read readOrder,
	mark *intake.Mark) (*order.Order, error) {
	const poll = time.Second
	start := time.Now()
	deadline, checked := start.Add(wait), start
	told := false // the intake, that the order left queued (LeftQueue)
	timer := waitTimers.Get().(*time.Timer)
	timer.Reset(min(wait, poll))
	defer func() {
		// Stopped, a timer delivers nothing more (Go 1.23's timers): the
		// next wait's Reset starts it clean.
		timer.Stop()
		waitTimers.Put(timer)
	}()
	for {
		var committed *order.Order
		select {
		case ev := <-events:
			if !order.Status(ev.Status).Terminal() {
				continue
			}
			committed = ev.Committed
		case <-timer.C:
		case <-ctx.Done():
			return nil, nil
		}
		now := time.Now()
		if now.Sub(checked) >= credentialRecheck {
			if s.credentialGone(ctx) {
				return nil, errCredentialGone("order_id", id)
			}
			checked = now
		}
		left := deadline.Sub(now)
		o, err := committed, error(nil)
		if o == nil {
			o, err = read(ctx, id)
		}
		if err == nil && o.Status != order.StatusQueued && !told {
			// Claimed (or ended while queued): its publish mark needs no
			// DELETE from this process's next batch.
			if !mark.Settle(true) {
				s.Intake.LeftQueue(id)
			}
			told = true
		}
		if !told {
			// Still queued at a poll (or not read): the order waits behind
			// others, or for a worker, and its mark goes to the intake's
			// batch now. Held for the whole wait, up to http.max_wait or
			// compat.vigrid.max_wait, the mark of an order published
			// fine was republished by the reconciler after its 10 s, and
			// counted unpublished meanwhile.
			mark.Settle(false)
		}
		switch {
		case err != nil && (left <= 0 || ctx.Err() != nil):
			return nil, nil
		case err != nil:
		case o.Status.Terminal() || left <= 0:
			return o, nil
		}
		timer.Reset(min(left, poll))
	}
}

// waitTimers are awaitFinish's timers, kept stopped.
var waitTimers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// decimalRE is a number as JSON writes it: ParseFloat also reads 0x10,
// 0x1_0p0 and Inf, which the spec's `type: number` is not.
var decimalRE = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$`)

// parseSeconds reads a number of seconds given as text (a query
// parameter, a header, a form field) as a JSON body's number is read
// (checkJSON): decimal, finite, and not a number whose digits are not all
// 0 but that a float64 reads as 0 (1e-400 read as "none given").
func parseSeconds(v string) (float64, bool) {
	n, err := strconv.ParseFloat(v, 64)
	if err != nil || !decimalRE.MatchString(v) || math.IsInf(n, 0) {
		return 0, false
	}
	mant, _, _ := strings.Cut(strings.ToLower(v), "e")
	if n == 0 && strings.ContainsAny(mant, "123456789") {
		return 0, false
	}
	return n, true
}

// waitOf reads Prefer: wait=N or ?wait=N (seconds).
func waitOf(r *http.Request, max time.Duration) (time.Duration, error) {
	q, err := queryOf(r, []string{"wait"})
	if err != nil {
		return 0, err
	}
	v, spelled := q.Get("wait"), "?wait="
	if v == "" {
		v, spelled = preferWait(r.Header.Values("Prefer")), "Prefer: wait="
	}
	if v == "" {
		return 0, nil
	}
	n, ok := parseSeconds(v)
	if !ok || n < 0 {
		return 0, order.FieldError(order.CodeInvalid, "wait", "%s", waitRefusal(spelled, v, max))
	}
	d := time.Duration(n * float64(time.Second))
	if d > max || n > 1e9 {
		d = max
	}
	return d, nil
}

// waitRefusal says what a wait takes, in the spelling the request used
// (spelled: "?wait=" or "Prefer: wait="), with the value to send instead
// when v is a duration (10s, 2m) and the server's bound: "wait must be a
// number of seconds" did not say that 10s is not one, nor what is.
func waitRefusal(spelled, v string, max time.Duration) string {
	shown := printableName(v)
	bound := "a longer wait is cut to the server's http.max_wait of " + strconv.FormatFloat(max.Seconds(), 'f', -1, 64) + " seconds"
	if max <= 0 {
		bound = "this server's http.max_wait is 0, so it answers at once whatever the wait"
	}
	if n, ok := parseSeconds(v); ok && n < 0 {
		return fmt.Sprintf("%s%s is negative: send a number of seconds from 0 (0: answer at once); %s", spelled, shown, bound)
	}
	example := "30"
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		example = strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
	}
	return fmt.Sprintf("%s%s is not a number of seconds: send %s%s (seconds, a fraction such as 0.5 too); %s", spelled, shown, spelled, example, bound)
}

// preferWait is the value of the wait preference in Prefer headers, as
// RFC 7240 reads them: the first wait counts (a later one is ignored),
// its parameters after ";" are not the value, and the value may be a
// quoted string. "" when there is none.
func preferWait(headers []string) string {
	for _, pref := range headers {
		for _, part := range strings.Split(pref, ",") {
			part, _, _ = strings.Cut(part, ";")
			k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
			if ok && strings.EqualFold(strings.TrimSpace(k), "wait") {
				val = strings.TrimSpace(val)
				if u, err := strconv.Unquote(val); err == nil && strings.HasPrefix(val, `"`) {
					val = u
				}
				return val
			}
		}
	}
	return ""
}

// redact keeps what the audit may store of a submission: never env values
// or stdin content.
func redact(req *SubmitRequest) map[string]any {
	names := make([]string, 0, len(req.Env))
	for k := range req.Env {
		names = append(names, k)
	}
	m := map[string]any{"host": req.Host, "command": req.Command, "args": req.Args, "env_names": names,
		"run_as": req.RunAs, "timeout_seconds": req.TimeoutSeconds, "dry_run": req.DryRun}
	if len(req.Hosts) > 0 {
		m["hosts"] = req.Hosts // a fan-out's targets, or its refusal names none
	}
	if req.Stdin != nil {
		m["stdin_chars"] = len(req.Stdin.Content)
	}
	return m
}

// handleGet is GET /v1/orders/{id}.
func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) {
	// One statement reads the order and its cancel request, for the tag
	// and the answer: a poll costs one round trip to PostgreSQL.
	var c *postgres.CancelRequest
	o, err := s.readPathOrder(r, func(ctx context.Context, id uuid.UUID) (*order.Order, error) {
		o, cr, err := s.Store.GetOrderLeanWithCancel(ctx, id)
		c = cr
		return o, err
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	cancel := cancellationFrom(o, c)
	respOf := func(o *order.Order) Order { resp := toResponse(o); resp.Cancel = cancel; return resp }
	if s.notModified(w, r, orderETag(o, respOf)) {
		return
	}
	s.encodeOrder(w, r, http.StatusOK, o, respOf)
}

// OrderList is a page of GET /v1/orders; NextCursor fetches the next.
type OrderList struct {
	Orders     []Order `json:"orders"`
	NextCursor *string `json:"next_cursor"`
}

// handleList is GET /v1/orders with filters and keyset pagination.
func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	q, err := queryOf(r, []string{"host", "status", "principal", "batch", "correlation", "runbook", "action", "since", "until", "limit", "cursor", "outputs"},
		"status") // statuses: comma-separated or repeated
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	f := postgres.Filter{Host: q.Get("host"), Principal: q.Get("principal"), Limit: 50}
	if strings.ContainsFunc(f.Principal, func(r rune) bool { return r < 0x20 || r == 0x7f || r == utf8.RuneError }) || len(f.Principal) > 256 {
		s.writeError(w, r, order.FieldError(order.CodeInvalid, "principal", "principal must be printable text of at most 256 bytes"))
		return
	}
	if err := order.CheckHost(f.Host); f.Host != "" && err != nil {
		s.writeError(w, r, err)
		return
	}
	for _, st := range q["status"] {
		for _, v := range strings.Split(st, ",") {
			if !order.Status(v).Valid() {
				s.writeError(w, r, order.FieldError(order.CodeInvalid, "status", "unknown status %q: give one or more of %s, separated by commas", printableName(v), statusList()))
				return
			}
			f.Status = append(f.Status, order.Status(v))
		}
	}
	f.Correlation, f.Runbook, f.Action = q.Get("correlation"), q.Get("runbook"), q.Get("action")
	if len(f.Action) > 63 || order.HasControl(f.Action, false) {
		s.writeError(w, r, order.FieldError(order.CodeInvalid, "action", "action must be an action name"))
		return
	}
	if len(f.Correlation) > 200 || order.HasControl(f.Correlation, false) {
		s.writeError(w, r, order.FieldError(order.CodeInvalid, "correlation", "correlation must be printable text of at most 200 bytes"))
		return
	}
	if len(f.Runbook) > 255 || order.HasControl(f.Runbook, false) {
		s.writeError(w, r, order.FieldError(order.CodeInvalid, "runbook", "runbook must be printable text of at most 255 bytes"))
		return
	}
	if v := q.Get("batch"); v != "" {
		id, err := parseID(v)
		if err != nil {
			s.writeError(w, r, order.FieldError(order.CodeInvalid, "batch", "batch must be a UUID"))
			return
		}
		f.Batch = &id
	}
	for _, t := range []struct {
		name string
		dst  **time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := q.Get(t.name); v != "" {
			ts, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				s.writeError(w, r, order.FieldError(order.CodeInvalid, t.name, "%s must be an RFC 3339 time such as 2025-01-31T15:04:05Z, not %q", t.name, printableName(v)))
				return
			}
			*t.dst = &ts
		}
	}
	if err := pageOf(q, &f); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := outputsOf(q, &f); err != nil {
		s.writeError(w, r, err)
		return
	}
	if p := principalOf(r); f.Principal != "" && f.Principal != p.Name && !seesAll(p) {
		encode(w, http.StatusOK, OrderList{Orders: []Order{}})
		return
	}
	s.writeOrderList(w, r, f)
}

// pageOf reads the paging parameters every order listing takes: limit
// (1-1000) and cursor.
func pageOf(q url.Values, f *postgres.Filter) error {
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return order.FieldError(order.CodeInvalid, "limit", "limit must be a whole number from 1 to 1000, not %.40q", v)
		}
		f.Limit = n
	}
	if v := q.Get("cursor"); v != "" {
		id, err := parseID(v)
		if err != nil {
			return order.FieldError(order.CodeInvalid, "cursor", "cursor is not valid")
		}
		f.Cursor = &id
	}
	return nil
}

// writeOrderList answers one page of the orders f selects, scoped to what
// the caller may read.
// Large kept outputs are streamed (encodeOrders); a listing asked with
// outputs=none (f.NoOutputs) and the web UI's listings, which show none,
// get none.
func (s *Server) writeOrderList(w http.ResponseWriter, r *http.Request, f postgres.Filter) {
	f.Lean = true
	f.NoOutputs = f.NoOutputs || uiCall(r)
	list, next, err := s.Store.ListOrders(r.Context(), scoped(r, f))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var cursor *string
	if next != nil {
		c := next.String()
		cursor = &c
	}
	if f.NoOutputs {
		encode(w, http.StatusOK, noOutputOrderList{Orders: noOutputResponses(list), NextCursor: cursor})
		return
	}
	resp := OrderList{Orders: make([]Order, len(list)), NextCursor: cursor}
	s.encodeOrders(w, r, http.StatusOK, resp, list, entries(resp.Orders), toResponse)
}

// entries points at each of orders, for encodeOrders to fill in.
func entries(orders []Order) []*Order {
	out := make([]*Order, len(orders))
	for i := range orders {
		out[i] = &orders[i]
	}
	return out
}

// statusList is every order status as a list filter's refusal names them:
// "unknown status" alone left the sender to guess the spelling
// (`Failed`, `timeout`) the filter takes.
func statusList() string {
	names := make([]string, len(order.Statuses))
	for i, st := range order.Statuses {
		names[i] = string(st)
	}
	return strings.Join(names, ", ")
}
