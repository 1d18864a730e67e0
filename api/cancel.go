package api

import (
	"context"
	"net/http"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
)

type cancelRequest struct {
	Signal string `json:"signal"`
}

// Cancellation is who asked to cancel an order, when, and with which
// signal; the order's "cancel" field on the wire.
type Cancellation struct {
	Actor       string    `json:"actor"`
	Signal      string    `json:"signal"`
	RequestedAt time.Time `json:"requested_at"`
	// HostOnline is set only in the answer to a cancel of a running
	// order: whether the host's worker, which alone signals the order,
	// was online (its heartbeat fresh, as GET /v1/hosts says) when the
	// request was recorded.
	HostOnline *bool `json:"host_online,omitempty"`
}

// handleCancel is POST /v1/orders/{id}/cancel: a queued order becomes
// canceled; a running one is signalled through its worker; a finished one
// is a conflict. The request is recorded in PostgreSQL first (who, when,
// which signal); the NATS control message that follows only wakes the
// worker, which acts on the recorded request and on nothing else.
func (s *Server) handleCancel(w http.ResponseWriter, r *http.Request) {
	var req cancelRequest
	if err := decodeOptional(r, s.Settings().MaxBodyBytes, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.Signal == "" {
		req.Signal = "SIGTERM"
	}
	switch req.Signal {
	case "SIGHUP", "SIGINT", "SIGTERM", "SIGKILL", "SIGUSR1", "SIGUSR2":
	default:
		s.writeError(w, r, order.FieldError(order.CodeInvalid, "signal", "signal must be one of SIGHUP, SIGINT, SIGTERM, SIGKILL, SIGUSR1, SIGUSR2"))
		return
	}
	p := principalOf(r)
	o, err := s.pathOrder(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if !p.HasRole("admin") && o.Principal != p.Name {
		s.writeError(w, r, order.Errorf(order.CodeForbidden, "only the submitter or an admin may cancel this order"))
		return
	}
	st, err := s.CancelOrder(r.Context(), o, p.Name, req.Signal)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	switch st {
	case order.StatusQueued: // now canceled
		s.answerCancel(w, r, o, http.StatusOK)
	case order.StatusRunning:
		s.answerCancel(w, r, o, http.StatusAccepted)
	default:
		s.writeError(w, r, &order.Error{Code: order.CodeConflict, Message: "order already finished with status " + string(st),
			Details: map[string]any{"status": st}})
	}
}

// hostOnlineTimeout bounds the lookup of the host's heartbeat in a
// cancel's answer, which goes without host_online when it runs out.
const hostOnlineTimeout = time.Second

// answerCancel writes the order as it is now, with its cancel request;
// for a running order (202), with whether a worker serves its host: the
// request only wakes that worker, and with none (it died, the machine is
// gone) nothing signals the order, which the answer must not hide.
func (s *Server) answerCancel(w http.ResponseWriter, r *http.Request, o *order.Order, code int) {
	if cur, err := s.Store.GetOrder(r.Context(), o.ID); err == nil {
		o = cur
	}
	resp := s.withCancellation(r.Context(), o)
	if code == http.StatusAccepted && resp.Cancel != nil {
		// Two NATS round trips: with NATS down each waited out its own
		// timeout, the answer to a cancel already recorded 10 s late.
		ctx, cancel := context.WithTimeout(r.Context(), hostOnlineTimeout)
		online, err := s.Queue.HostOnline(ctx, o.Host)
		cancel()
		if err == nil {
			resp.Cancel.HostOnline = &online
		} else {
			s.logger.Warn("cancel recorded; whether the host is online is unknown", "order_id", o.ID, "host", o.Host, "error", err)
		}
	}
	encode(w, code, resp)
}

// HostOnline reports whether host's worker is alive, as a cancel's
// answer says it (host_online), within hostOnlineTimeout; known is false
// when that cannot be told (NATS unreachable).
func (s *Server) HostOnline(ctx context.Context, host string) (online, known bool) {
	ctx, cancel := context.WithTimeout(ctx, hostOnlineTimeout)
	defer cancel()
	online, err := s.Queue.HostOnline(ctx, host)
	return online, err == nil
}

// withCancellation is the order's response with its recorded cancel
// request, if any. Only orders a cancel can have touched are looked up, so
// the common case costs no query: a running order, one the cancel ended,
// and one that ended otherwise while a request waited (its worker died:
// interrupted; its timeout came first: timed_out). A succeeded or failed
// order whose command ended before the signal is not looked up: those
// are every ?wait answer.
func (s *Server) withCancellation(ctx context.Context, o *order.Order) Order {
	resp := toResponse(o)
	resp.Cancel = s.cancellationOf(ctx, o)
	return resp
}

// cancellationOf is o's cancel request as answers show it, nil when it
// has none or its status cannot have one.
func (s *Server) cancellationOf(ctx context.Context, o *order.Order) *Cancellation {
	if !mayHaveCancel(o) {
		return nil
	}
	c, err := s.Store.CancelRequestOf(ctx, o.ID)
	if err != nil {
		return nil
	}
	return cancellationFrom(o, c)
}

// mayHaveCancel says whether o's answer shows a cancel request it has.
func mayHaveCancel(o *order.Order) bool {
	switch o.Status {
	case order.StatusRunning, order.StatusKilled, order.StatusCanceled, order.StatusInterrupted, order.StatusTimedOut:
		return true
	}
	return false
}

// cancellationFrom is c, o's cancel request (nil: none), as o's answer
// shows it.
func cancellationFrom(o *order.Order, c *postgres.CancelRequest) *Cancellation {
	if c == nil || !mayHaveCancel(o) {
		return nil
	}
	return &Cancellation{Actor: c.Actor, Signal: c.Signal, RequestedAt: c.RequestedAt}
}
