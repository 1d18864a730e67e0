package client

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
)

// Code is one of the API's stable error codes (api/openapi.yaml,
// ErrorCode); switch on it, never on a message.
type Code string

// The API's error codes.
const (
	CodeInvalid              Code = "invalid_request"        // 400
	CodeUnauthenticated      Code = "unauthenticated"        // 401
	CodeForbidden            Code = "forbidden"              // 403
	CodeNotFound             Code = "not_found"              // 404
	CodeMethodNotAllowed     Code = "method_not_allowed"     // 405
	CodeConflict             Code = "conflict"               // 409
	CodeHostInMaintenance    Code = "host_in_maintenance"    // 409
	CodePreconditionFailed   Code = "precondition_failed"    // 412
	CodeTooLarge             Code = "too_large"              // 413
	CodeUnsupportedType      Code = "unsupported_media"      // 415
	CodeUnprocessable        Code = "unprocessable"          // 422
	CodeConfirmationRequired Code = "confirmation_required"  // 422
	CodeConfigEmpty          Code = "config_empty"           // 422
	CodeIdempotencyReused    Code = "idempotency_key_reused" // 422
	CodeRateLimited          Code = "rate_limited"           // 429
	CodeHeaderTooLarge       Code = "header_too_large"       // 431
	CodeInternal             Code = "internal"               // 500
	CodeUnavailable          Code = "unavailable"            // 503
)

// Error is a refusal by the API: its HTTP status and the error envelope's
// stable code, message and details. An answer that is not the envelope (a
// proxy's error page) gets the code "http_<status>".
type Error struct {
	Status  int
	Code    Code
	Message string
	Details map[string]any
}

// Error prints "<message> (<code>)".
func (e *Error) Error() string { return fmt.Sprintf("%s (%s)", e.Message, e.Code) }

// ErrorCode returns the code of the API's refusal in err's chain, or ""
// when err is not one.
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// TransportError says the API could not be reached at all (no answer, or
// the connection broke before one).
type TransportError struct {
	URL string
	Err error
}

func (e *TransportError) Error() string {
	return fmt.Sprintf("cannot reach the orderly API at %s: %v", e.URL, e.Err)
}

func (e *TransportError) Unwrap() error { return e.Err }

// Temporary reports errors worth retrying later: the API unreachable, or
// it or a proxy in front of it answering that a dependency is down. An
// https:// URL of a plain HTTP API, or a certificate the client does not
// trust, is a mistake of the client's setup that no retry mends.
func Temporary(err error) bool {
	var te *TransportError
	if errors.As(err, &te) {
		var cv *tls.CertificateVerificationError
		return !errors.Is(err, http.ErrSchemeMismatch) && !errors.As(err, &cv)
	}
	var e *Error
	if errors.As(err, &e) {
		switch e.Status {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
	}
	return false
}

// hasStatus reports whether err is an API answer with one of statuses.
func hasStatus(err error, statuses ...int) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	for _, s := range statuses {
		if e.Status == s {
			return true
		}
	}
	return false
}
