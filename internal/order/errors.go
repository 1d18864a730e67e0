package order

import (
	"errors"
	"fmt"
	"strings"
)

// Code is a stable, machine-readable error code. The API maps each code to
// an HTTP status in one place (api/errors.go); clients may switch on it.
type Code string

// The closed set of error codes.
const (
	CodeInvalid         Code = "invalid_request"   // malformed input: 400
	CodeUnauthenticated Code = "unauthenticated"   // 401
	CodeForbidden       Code = "forbidden"         // 403
	CodeNotFound        Code = "not_found"         // 404
	CodeConflict        Code = "conflict"          // 409
	CodeTooLarge        Code = "too_large"         // 413
	CodeUnsupportedType Code = "unsupported_media" // 415
	CodeUnprocessable   Code = "unprocessable"     // 422: valid JSON, semantically invalid
	CodeRateLimited     Code = "rate_limited"      // 429
	CodeUnavailable     Code = "unavailable"       // 503: a dependency is down
	CodeInternal        Code = "internal"          // 500: a bug, never bad input

	// CodeConfirmationRequired: a config reload would remove a whole part
	// of the security setup and the request did not confirm it: 422.
	CodeConfirmationRequired Code = "confirmation_required"
	// CodeConfigEmpty: a config reload found a file that sets nothing: 422.
	CodeConfigEmpty Code = "config_empty"

	// CodeIdempotencyReused: an Idempotency-Key (or Nats-Msg-Id) already
	// named a different request: 422, as payment APIs answer.
	CodeIdempotencyReused Code = "idempotency_key_reused"
	// CodeHeaderTooLarge: the request's header is over the server's limit:
	// 431.
	CodeHeaderTooLarge Code = "header_too_large"
	// CodePreconditionFailed: the request's If-Match names none of the
	// target's current entity tags (RFC 9110 §13.1.1): 412.
	CodePreconditionFailed Code = "precondition_failed"
	// CodeHostInMaintenance: an admin put the order's host in maintenance
	// (POST /v1/hosts/{host}/maintenance), and new orders for it are
	// refused until it is taken out: 409.
	CodeHostInMaintenance Code = "host_in_maintenance"
)

// NewerAPIRefusal starts the message of a worker's refusal of an order
// whose policy decision has keys it does not know (an API newer than the
// worker accepted it), followed by those keys.
const NewerAPIRefusal = "the order's policy decision has "

// CodeOfText returns the code an *Error's text starts with ("forbidden:
// command denied …", as Error writes it), and whether it starts with one
// of the closed set. An order's stored error (Result.Error) is such a
// text when orderly refused or failed it with one of its errors, so its
// code is known again without a column of its own.
//
// A worker older than the API that accepted an order refuses it when its
// policy decision has keys the worker does not know; workers before the
// code was written stored that refusal's text alone, starting with
// NewerAPIRefusal, which is CodeUnprocessable.
//
// Every code of the closed set must be named in the switch below: the
// set is written out twice, and TestCodeOfTextKnowsEveryCode reads this
// file's constants to fail when one is missing here.
func CodeOfText(s string) (Code, bool) {
	if strings.HasPrefix(s, NewerAPIRefusal) {
		return CodeUnprocessable, true
	}
	prefix, _, ok := strings.Cut(s, ": ")
	if !ok {
		return "", false
	}
	switch c := Code(prefix); c {
	case CodeInvalid, CodeUnauthenticated, CodeForbidden, CodeNotFound, CodeConflict, CodeTooLarge,
		CodeUnsupportedType, CodeUnprocessable, CodeRateLimited, CodeUnavailable, CodeInternal,
		CodeConfirmationRequired, CodeConfigEmpty, CodeIdempotencyReused, CodeHeaderTooLarge, CodePreconditionFailed,
		CodeHostInMaintenance:
		return c, true
	}
	return "", false
}

// Error is orderly's one error type. Message is safe to show to clients;
// Details carries structured context (the offending field, a policy trace).
type Error struct {
	Code    Code
	Message string
	Details map[string]any
	Err     error // the underlying cause, never shown to clients
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// FieldError returns an error about one field of the input, so a client can
// point at it.
func FieldError(code Code, field, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Details: map[string]any{"field": field}}
}

// ErrorCode returns the Code of err, or CodeInternal if it is not ours.
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// ErrNotFound is returned when an order does not exist.
var ErrNotFound = &Error{Code: CodeNotFound, Message: "order not found"}
