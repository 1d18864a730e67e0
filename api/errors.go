package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/orderly-run/orderly/internal/order"
)

// statusOf maps a domain error code to its HTTP status. It is the only
// place that does so.
func statusOf(code order.Code) int {
	switch code {
	case order.CodeInvalid:
		return http.StatusBadRequest
	case order.CodeUnauthenticated:
		return http.StatusUnauthorized
	case order.CodeForbidden:
		return http.StatusForbidden
	case order.CodeNotFound:
		return http.StatusNotFound
	case order.CodeConflict, order.CodeHostInMaintenance:
		return http.StatusConflict
	case order.CodePreconditionFailed:
		return http.StatusPreconditionFailed
	case order.CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case order.CodeHeaderTooLarge:
		return http.StatusRequestHeaderFieldsTooLarge
	case order.CodeUnsupportedType:
		return http.StatusUnsupportedMediaType
	case order.CodeUnprocessable, order.CodeIdempotencyReused:
		return http.StatusUnprocessableEntity
	case order.CodeConfirmationRequired, order.CodeConfigEmpty:
		return http.StatusUnprocessableEntity
	case order.CodeRateLimited:
		return http.StatusTooManyRequests
	case order.CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// ErrStopping is the cause a server's base context ends with when it
// stops (http.Server.BaseContext, context.WithCancelCause): a request it
// cut short is answered 503, not as an internal error.
var ErrStopping = errors.New("the server is stopping")

// statusClientClosed is the status recorded (in the metrics; no
// one receives it) for a request whose client left before the answer.
const statusClientClosed = 499

// ErrorBody is the error envelope of every refusal (DESIGN §3).
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the inside of the envelope: a stable code, a message for
// people, and structured details.
type ErrorDetail struct {
	Code    order.Code     `json:"code"`
	Message string         `json:"message"`
	Details map[string]any `json:"details,omitempty"`
}

// errorDetail is the envelope's inside for err; errors that are not ours
// show only a generic message.
func errorDetail(err error) ErrorDetail {
	var e *order.Error
	if !errors.As(err, &e) {
		return ErrorDetail{Code: order.CodeInternal, Message: "internal error"}
	}
	return ErrorDetail{Code: e.Code, Message: e.Message, Details: e.Details}
}

// ClientClosed is err as a client reads it when the request's context
// ended because the client closed its side of the connection: net/http
// ends it at the first end of input it reads after the request, and a
// client that sends its request and then shuts down its writing half
// (`nc -N`, a script's `shutdown(SHUT_WR)`) is still there to read the
// answer. Such a request whose work then met the ended context (its
// PostgreSQL read) was answered 500 "internal error", a server failure
// for what the client did. It is 400 invalid_request with
// details.reason client_closed now, unaudited (no check refused it);
// what it asked may have been done, which a retry with the same
// Idempotency-Key finds. Any other error, and the stop's own cut
// (ErrStopping), is err unchanged.
func ClientClosed(r *http.Request, err error) error {
	if err == nil || !errors.Is(err, context.Canceled) || r.Context().Err() == nil || errors.Is(context.Cause(r.Context()), ErrStopping) {
		return err
	}
	return &order.Error{Code: order.CodeInvalid, Err: err, Details: map[string]any{"reason": "client_closed"},
		Message: "the request was cut short: the client closed its side of the connection before the answer; keep it open until the answer comes (what was asked may have been done: a retry with the same Idempotency-Key finds it)"}
}

// writeError answers with the error envelope of DESIGN §3. Errors that are
// not ours are bugs or dependency failures: they are logged with their cause
// and the client sees a generic message.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	s.writeErrorOf(w, r, err, nil)
}

// writeErrorOf is writeError for a request whose audited refusal records
// redacted() as its request (a submission, redacted: handleSubmit), made
// only for a refusal the audit records: an accepted submission used to
// copy the request and its context to carry a redacted copy it never
// needed (docs/benchmarks.md, "The sync submit, counted").
func (s *Server) writeErrorOf(w http.ResponseWriter, r *http.Request, err error, redacted func() map[string]any) {
	err = ClientClosed(r, err)
	gone := errors.Is(err, context.Canceled) && r.Context().Err() != nil && !errors.Is(context.Cause(r.Context()), ErrStopping)
	var e *order.Error
	if !errors.As(err, &e) {
		e = &order.Error{Code: order.CodeInternal, Message: "internal error"}
	}
	if e.Code == order.CodeInternal && errors.Is(err, context.Canceled) && errors.Is(context.Cause(r.Context()), ErrStopping) {
		// The server's stop ended the request (its base context) while it
		// waited on PostgreSQL or NATS: the client is still there, and
		// nothing failed that a retry, here once it is back or at another
		// replica, would not get past. It was answered 500 "internal
		// error" (logged at debug, as a client gone away). Only the cut
		// itself: a failure of its own during the stop (a bug) stays a 500
		// logged with its cause, and a 503 of ours keeps what it says (an
		// order recorded but not queued names it: a retry without a key
		// told only "try again" records a second one).
		e = order.Errorf(order.CodeUnavailable, "the server is stopping: try again")
		err = fmt.Errorf("%w (%v)", ErrStopping, err)
	}
	switch {
	case errors.Is(err, ErrStopping):
		// The stop's own cut (above): context.Canceled during a shutdown
		// is not an error (STYLE), and a stop with requests in flight is
		// a normal stop; the run of 503s of an outage stays an error.
		s.logger.Info("request cut by the stop", "method", r.Method, "path", r.URL.Path, "error", err)
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away while we worked (its timeout, a retry
		// elsewhere): nothing failed here and nobody reads the answer
		// (measure records it as 499). A submission cut short this way
		// may still have been recorded; its retry with the same key
		// finds it.
		s.logger.Debug("client closed the request", "method", r.Method, "path", r.URL.Path, "error", err)
	case e.Code == order.CodeUnavailable:
		// One line per run of them, not per request (unavailableLog).
		s.unavailable.failed(s.logger, r, err)
	case e.Code == order.CodeInternal:
		s.logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	}
	status := statusOf(e.Code)
	if status >= 400 && status < 500 && status != http.StatusNotFound && !gone {
		s.audit(r, status, e, redacted)
	}
	if secs, ok := e.Details["retry_after_seconds"].(int64); ok && (status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable) {
		// Every 429 says when to come back, in the header clients
		// (orderly's own) wait for: rate limits and action limits alike;
		// so does a 503 that knows (a follower past the live stream's
		// cap on consumers).
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	if status == http.StatusUnauthorized && w.Header().Get("WWW-Authenticate") == "" {
		// RFC 6750 §3: a 401 names the scheme (a wait whose credential
		// went, errCredentialGone; authenticate sets its own).
		w.Header().Set("WWW-Authenticate", `Bearer realm="orderly", error="invalid_token"`)
	}
	encode(w, status, ErrorBody{Error: ErrorDetail{Code: e.Code, Message: e.Message, Details: e.Details}})
}
