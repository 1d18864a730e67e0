package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
)

// CompatSurface is a drop-in surface for the clients of a tool orderly
// replaces (api/compat). It answers in that tool's own format, network
// refusals included, so it sits beside the native routes rather than under
// their middleware; everything it runs goes through SubmitOrder.
type CompatSurface struct {
	Prefix  string
	Handler http.Handler
	// Fallback serves the surface only where no native route and no other
	// surface matches, for httpexec's POST /<command> at the root.
	Fallback bool
	// Enabled, when set, is asked per request: a surface a reload turned
	// off is passed over as if it were not mounted.
	Enabled func() bool
	// RateHeaders sends X-RateLimit-Limit, -Remaining and -Reset on every
	// answer past a rate limit that is on, 429s included, as stage0's
	// Flask-Limiter did.
	RateHeaders bool
}

// CompatRefuser is a surface handler that writes a refusal in its
// original's error format (Vigrid's {"status": "error", "message": …},
// stage0's {"error": …}, httpexec's plain text). withCompat answers
// limits.rate_per_ip with it for a surface whose Handler is one, and
// records the refusal under its Source: a drop-in client reads every
// error of its surface in one format, and the audit names the surface.
type CompatRefuser interface {
	Refuse(w http.ResponseWriter, status int, message string)
	// Source is the surface's name in rejections and orders.source.
	Source() string
	// InternalError writes the original's own 500 (Vigrid's "Internal
	// server error", stage0's "A processing error occurred", Quart's
	// page), for a handler that panicked.
	InternalError(w http.ResponseWriter)
}

// MountCompat adds compat surfaces; call it before Handler.
func (s *Server) MountCompat(c ...CompatSurface) { s.compat = append(s.compat, c...) }

// withCompat routes requests under a compat surface's prefix to it and
// everything else to the native router.
func (s *Server) withCompat(native *chi.Mux) http.Handler {
	if len(s.compat) == 0 {
		return native
	}
	surfaces := make([]CompatSurface, len(s.compat))
	for i, c := range s.compat {
		limited := s.limitIPWith(c.Handler, s.compatRateLimited(c.Handler))
		if c.RateHeaders {
			limited = withRateHeaders(limited)
		}
		c.Handler = apiHeaders(s.compatRecoverer(c.Handler, s.measure(s.compatClient(limited))))
		surfaces[i] = c
	}
	// The most specific surface answers: a fallback (httpexec at /) only
	// where no other surface does, then the longest prefix first, so
	// Vigrid's /api/v1 is never stage0's /api.
	slices.SortStableFunc(surfaces, func(a, b CompatSurface) int {
		if a.Fallback != b.Fallback {
			if a.Fallback {
				return 1
			}
			return -1
		}
		return len(strings.TrimSuffix(b.Prefix, "/")) - len(strings.TrimSuffix(a.Prefix, "/"))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, c := range surfaces {
			// A Flask original's routing merged doubled slashes (and
			// redirected to the merged path), so a surface at a prefix
			// also gets the paths that merge under it.
			under := underPrefix(r.URL.Path, c.Prefix) || !c.Fallback && underPrefix(MergeSlashes(r.URL.Path), c.Prefix)
			if !under || (c.Fallback && nativeRoute(native, r.URL.Path)) ||
				(c.Enabled != nil && !c.Enabled()) {
				continue
			}
			c.Handler.ServeHTTP(w, r)
			return
		}
		native.ServeHTTP(w, r)
	})
}

// compatRateLimited answers a surface's request over limits.rate_per_ip:
// in its original's format when h is a CompatRefuser, else in orderly's
// envelope.
func (s *Server) compatRateLimited(h http.Handler) func(http.ResponseWriter, *http.Request, *order.Error) {
	rf, ok := h.(CompatRefuser)
	if !ok {
		return func(w http.ResponseWriter, r *http.Request, e *order.Error) { s.writeError(w, r, e) }
	}
	return func(w http.ResponseWriter, r *http.Request, e *order.Error) {
		s.AuditRefusal(r.Context(), r, "", clientIPOf(r), rf.Source(), http.StatusTooManyRequests, e)
		setRetryAfter(w, e.Details)
		rf.Refuse(w, http.StatusTooManyRequests, e.Message)
	}
}

// compatRecoverer is chi's Recoverer for a surface: a handler's panic is
// logged and answered with the original's own 500 when h is a
// CompatRefuser (chi's is an empty 500), so that even a bug of ours reads
// as the client's tool would have failed.
func (s *Server) compatRecoverer(h, next http.Handler) http.Handler {
	rf, ok := h.(CompatRefuser)
	if !ok {
		return middleware.Recoverer(next)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler { // net/http's abort, passed on as chi's Recoverer does
				panic(v)
			}
			s.logger.Error("compat surface panicked", "source", rf.Source(), "method", r.Method, "path", r.URL.Path,
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			rf.InternalError(w)
		}()
		next.ServeHTTP(w, r)
	})
}

// compatClient records the client address for limits.rate_per_ip and the
// audit, as network does for native routes; the surface applies the ACL
// itself, in its original's order and format.
func (s *Server) compatClient(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip := r.RemoteAddr
		if host, _, err := net.SplitHostPort(ip); err == nil {
			ip = host
		}
		if acl := s.Settings().ACL; acl != nil {
			if addr, err := acl.ClientIP(r.RemoteAddr, r.Header.Values("X-Forwarded-For")); err == nil {
				ip = addr.String()
			}
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), clientIPKey{}, ip)))
	})
}

func underPrefix(path, prefix string) bool {
	if prefix == "/" {
		return true
	}
	prefix = strings.TrimSuffix(prefix, "/")
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

// MergeSlashes is path with each run of slashes made one, as Werkzeug's
// merge_slashes matched it.
func MergeSlashes(path string) string {
	if !strings.Contains(path, "//") {
		return path
	}
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		if path[i] == '/' && i > 0 && path[i-1] == '/' {
			continue
		}
		b.WriteByte(path[i])
	}
	return b.String()
}

// nativeRoute reports whether a native route serves path with any method,
// or path lies in a subtree that is orderly's whole: /v1/, the web UI's
// /ui/ and the explorer's /docs/, whose own 404s answer a path they do not
// know.
func nativeRoute(native *chi.Mux, path string) bool {
	return allowedMethods(native, path) != "" || strings.HasPrefix(path, "/v1/") ||
		strings.HasPrefix(path, "/ui/") || strings.HasPrefix(path, "/docs/")
}

// SubmitOrder runs o through the one intake path (validate, screen,
// authorize, record, publish) as p, exactly as POST /v1/orders does, and
// with wait > 0 waits up to wait for it to finish. The returned order is
// as PostgreSQL has it then, its kept outputs read in full.
func (s *Server) SubmitOrder(ctx context.Context, p auth.Principal, o *order.Order, wait time.Duration) (*order.Order, error) {
	return s.submitOrder(ctx, p, o, wait, s.Store.GetOrder)
}

// submitOrder is SubmitOrder reading the finished order with read: with
// GetOrderLean for an answer that streams, whose large kept outputs stay
// in the database (postgres.OutputsLeft) for encodeOrder to read in slices.
func (s *Server) submitOrder(ctx context.Context, p auth.Principal, o *order.Order, wait time.Duration, read readOrder) (*order.Order, error) {
	if o.ID == uuid.Nil {
		o.ID = order.NewID()
	}
	var events <-chan queue.Event
	if wait > 0 {
		release, err := s.HoldStream(p.Name)
		if err != nil {
			return nil, err
		}
		defer release()
		ch, stop, err := s.events.wait(s.Queue.Conn(), o.Host, o.ID)
		if err != nil {
			return nil, &order.Error{Code: order.CodeUnavailable, Message: "event bus unavailable", Err: err}
		}
		defer stop()
		events = ch
	}
	if wait <= 0 {
		stored, err := s.Intake.Submit(ctx, p, o)
		if err != nil {
			return nil, notQueued(err)
		}
		return stored, nil
	}
	stored, mark, err := s.Intake.SubmitAwaited(ctx, p, o)
	if err != nil {
		return nil, notQueued(err)
	}
	// The wait settles the publish mark when it first reads the order past
	// queued (the claim deleted it); a wait that never did (its deadline,
	// a client gone, failed reads) leaves the mark to the intake's batch.
	defer mark.Settle(false)
	return s.awaitStored(ctx, o, stored, events, wait, read, &mark)
}

// replayedHeader says of a REST answer that it is the order an earlier
// request with the same Idempotency-Key recorded, not one this request
// made: a retry's answer (docs/client.md).
const replayedHeader = "Idempotent-Replayed"

// setReplayed puts replayedHeader on a replayed answer: one whose order
// is not the one the request made (its id differs from the id the
// handler gave the request's order).
func setReplayed(w http.ResponseWriter, replayed bool) {
	if replayed {
		w.Header().Set(replayedHeader, "true")
	}
}

// notQueued is err, or for an order recorded but not published, the
// 503 that says so and names it.
func notQueued(err error) error {
	var np *intake.ErrNotPublished
	if errors.As(err, &np) {
		return &order.Error{Code: order.CodeUnavailable,
			Message: "order recorded but not yet queued: the message bus is unavailable; it will be queued automatically",
			Details: map[string]any{"order_id": np.ID}, Err: err}
	}
	return err
}

// recordedOrder answers o, a keyed request that a check now refuses, with
// the order its key recorded for the same request (intake's Recorded),
// waiting for it up to wait as the first request did; nil, nil when
// there is none (the caller's refusal stands).
func (s *Server) recordedOrder(ctx context.Context, p auth.Principal, o *order.Order, wait time.Duration, read readOrder) (*order.Order, error) {
	stored, err := s.Intake.Recorded(ctx, p, o)
	if stored == nil {
		return nil, nil // the refusal stands, a failed look-up included
	}
	if err != nil {
		return nil, notQueued(err)
	}
	if wait > 0 && !stored.Status.Terminal() {
		release, err := s.HoldStream(p.Name)
		if err != nil {
			return nil, err
		}
		defer release()
	}
	return s.awaitStored(ctx, o, stored, nil, wait, read, nil)
}

// awaitStored waits up to wait for stored, the order a submission of o
// recorded or found by its key, to finish; events are o's when the
// caller subscribed to them before the submission; mark, when not nil,
// is the publish mark its wait settles (awaitFinish).
func (s *Server) awaitStored(ctx context.Context, o, stored *order.Order, events <-chan queue.Event, wait time.Duration, read readOrder,
	mark *intake.Mark) (*order.Order, error) {
	if wait > 0 && !stored.Status.Terminal() {
		if stored.ID != o.ID {
			// A repeated Idempotency-Key is the first order (InsertOrder
			// read it): a retry of a wait that lost its answer (a replica
			// died) waits for that order as the first request did.
			ch, stop, err := s.events.wait(s.Queue.Conn(), stored.Host, stored.ID)
			if err != nil {
				return stored, nil
			}
			defer stop()
			events = ch
		}
		f, err := s.awaitFinish(ctx, stored.ID, events, wait, read, mark)
		if err != nil {
			return nil, err
		}
		if f != nil {
			return f, nil
		}
	}
	return stored, nil
}

// CancelOrder asks for o to be canceled as actor with signal, through the
// same recorded path as POST /v1/orders/{id}/cancel: the request is written
// to PostgreSQL first, then the worker is woken. It returns the status the
// order had: queued orders are now canceled, running ones are signalled,
// and any other status means it had already finished.
func (s *Server) CancelOrder(ctx context.Context, o *order.Order, actor, signal string) (order.Status, error) {
	st, err := s.Store.RequestCancel(ctx, o.ID, actor, signal)
	if err != nil {
		return st, err
	}
	switch st {
	case order.StatusQueued:
		s.canceled(o, actor)
	case order.StatusRunning:
		// The request is on record: if this wake-up is lost, the worker
		// still finds it when it next checks.
		if err := s.Queue.SendControl(o.Host, queue.Control{OrderID: o.ID}); err != nil {
			return st, &order.Error{Code: order.CodeUnavailable, Message: "cancel recorded, but the worker cannot be reached now", Err: err,
				Details: map[string]any{"order_id": o.ID}}
		}
	}
	return st, nil
}

// BindWaiter makes this API process o's waiter (Presence.Bind): a
// compat surface's order, whose client waits here and never learns its
// id, is canceled at its claim rather than run once this process is gone.
func (s *Server) BindWaiter(o *order.Order) { s.Presence.Bind(o) }

// CancelQueued cancels o as actor when it is still queued; one that has
// started runs on. A stage0 client whose stream ends before its run
// starts never learns the order's id, so the run would start later for
// nobody (a sub-runbook after its parent gave up). The cancel and a
// worker's claim exclude each other in PostgreSQL.
func (s *Server) CancelQueued(ctx context.Context, o *order.Order, actor, reason string) {
	canceled, err := s.Store.Cancel(ctx, o.ID, actor, reason)
	if err != nil {
		s.logger.Error("cancel an order whose client went away", "order_id", o.ID, "host", o.Host, "error", err)
		return
	}
	if canceled {
		s.canceled(o, actor, "reason", reason)
	}
}

// canceled tells of o, queued until actor canceled it now: its log line,
// its count, and its finished event for whoever waits on it.
func (s *Server) canceled(o *order.Order, actor string, attrs ...any) {
	s.logger.Info("order canceled", append([]any{"order_id", o.ID, "host", o.Host, "principal", o.Principal, "actor", actor}, attrs...)...)
	s.Metrics.Finished(o.Host, order.StatusCanceled, -1)
	_ = s.Queue.PublishEvent(queue.Event{OrderID: o.ID, Type: "finished", Status: string(order.StatusCanceled), Host: o.Host})
}

// HostQueue is a host's running order (nil when idle) and its queued
// orders in execution order, as GET /v1/hosts/{host} lists them; with
// everyone false only p's own orders are listed. depth counts every
// principal's queued orders.
func (s *Server) HostQueue(ctx context.Context, p auth.Principal, host string) (running *order.Order, queued []*order.Order, depth int, err error) {
	f := func(st order.Status, limit int, oldest bool) postgres.Filter {
		f := postgres.Filter{Host: host, Status: []order.Status{st}, Limit: limit, OldestFirst: oldest}
		if !seesAll(p) {
			f.Principal = p.Name
		}
		return f
	}
	run, _, err := s.Store.ListOrders(ctx, f(order.StatusRunning, 10, false))
	if err != nil {
		return nil, nil, 0, err
	}
	if len(run) > 0 {
		running = run[0]
	}
	if queued, _, err = s.Store.ListOrders(ctx, f(order.StatusQueued, 1000, true)); err != nil {
		return nil, nil, 0, err
	}
	depth, err = s.Store.QueueDepth(ctx, host)
	return running, queued, depth, err
}

// AuditRefusal records a compat request refused before it became an order,
// like the native API's refusals (who, from where, why; never the body).
func (s *Server) AuditRefusal(ctx context.Context, r *http.Request, principal, clientIP, source string, status int, err error) {
	e := errorDetail(err)
	if !s.recordRefusal(clientIP, principal) {
		s.Intake.Unrecorded(string(e.Code))
		return
	}
	s.Intake.Reject(ctx, postgres.Rejection{Principal: principal, ClientIP: clientIP, Source: source,
		Method: r.Method, Path: r.URL.Path, Status: status, Code: string(e.Code), Reason: e.Message,
		Request: map[string]any{"query": auditQuery(r.URL.RawQuery)}})
}

// RejectOrder records a command a compat surface refused at its own
// checks, as AuditRefusal does, and logs it as intake logs the orders it
// refuses (docs/observability.md, "order rejected"); there is no order
// id: the surface refused the command before intake gave it one.
func (s *Server) RejectOrder(ctx context.Context, r *http.Request, principal, clientIP, source, host string, status int, err error) {
	s.AuditRefusal(ctx, r, principal, clientIP, source, status, err)
	s.logger.Info("order rejected", "host", host, "principal", principal, "source", source,
		"code", order.ErrorCode(err), "reason", err.Error())
}

// LimitPrincipal applies limits.rate_per_principal to a compat surface's
// request as principal, once it is authenticated (httpexec's: its one
// principal), as limitPrincipal does for every native request: from the
// same allowance, so that one credential spread over addresses gets no
// more through a surface. Past it, it records the refusal under source,
// sets Retry-After on w and returns the refusal, for the surface to
// answer 429 with its message in its original's format.
func (s *Server) LimitPrincipal(w http.ResponseWriter, r *http.Request, principal, clientIP, source string) error {
	t, err := s.spendPrincipalTake(r.Context(), principal)
	if wantsRateHeaders(r.Context()) {
		setRateHeaders(w, t)
	}
	if err == nil {
		return nil
	}
	s.AuditRefusal(r.Context(), r, principal, clientIP, source, http.StatusTooManyRequests, err)
	setRetryAfter(w, errorDetail(err).Details)
	return err
}

// setRetryAfter sets the Retry-After of a 429 from its
// details.retry_after_seconds, as writeError does.
func setRetryAfter(w http.ResponseWriter, details map[string]any) {
	if secs, ok := details["retry_after_seconds"].(int64); ok {
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
}

// HTTPStatus is the HTTP status of err under the one error map (statusOf),
// for compat surfaces that write their own bodies.
func HTTPStatus(err error) int { return statusOf(errorDetail(err).Code) }
