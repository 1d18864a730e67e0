package order

import (
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits bound what one order may ask for. Every field is a config key
// (limits.*) with a safe default; see DefaultLimits.
type Limits struct {
	MaxArgs         int           // number of arguments
	MaxArgBytes     int           // bytes of one argument
	MaxArgsBytes    int           // bytes of all arguments together
	MaxCommandBytes int           // bytes of the command name
	MaxStdinBytes   int           // decoded stdin
	MaxEnv          int           // number of env overrides
	MaxEnvBytes     int           // bytes of one env value
	DefaultTimeout  time.Duration // when the order names none
	MaxTimeout      time.Duration
	MaxExpiry       time.Duration
}

// Lengths of the labels a client gives an order. The API takes an
// Idempotency-Key of up to 200 bytes; a fan-out adds "/<host>" to it.
const (
	MaxCorrelationBytes    = 200
	MaxIdempotencyKeyBytes = 512
)

// DefaultLimits are the limits used when the config sets none.
func DefaultLimits() Limits {
	return Limits{
		MaxArgs:         256,
		MaxArgBytes:     64 << 10,
		MaxArgsBytes:    256 << 10,
		MaxCommandBytes: 4096,
		MaxStdinBytes:   512 << 10,
		MaxEnv:          64,
		MaxEnvBytes:     8 << 10,
		DefaultTimeout:  60 * time.Second,
		MaxTimeout:      24 * time.Hour,
		MaxExpiry:       7 * 24 * time.Hour,
	}
}

var (
	hostRE    = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	userRE    = regexp.MustCompile(`^[a-z_][a-z0-9_.-]{0,31}$|^[0-9]{1,10}$`)
)

// ValidHost reports whether h is a host id: one NATS subject token, so it
// can never address other subjects (DESIGN §2.5).
func ValidHost(h string) bool { return hostRE.MatchString(h) }

// ValidEnvName reports whether n is a portable environment variable name.
func ValidEnvName(n string) bool { return envNameRE.MatchString(n) }

// CheckHost refuses a host name ValidHost does not accept, naming the
// field. A body that left the host out is told so, as one without a
// command is: "must be 1-128 characters" read as a complaint about a
// host the sender never gave.
func CheckHost(h string) error {
	if h == "" {
		return FieldError(CodeInvalid, "host", "host is required")
	}
	if !ValidHost(h) {
		return FieldError(CodeInvalid, "host", "host must be 1-128 characters of [A-Za-z0-9_-]")
	}
	return nil
}

// ValidUser reports whether u looks like a Unix user name or numeric id.
func ValidUser(u string) bool { return userRE.MatchString(u) }

// Validate checks o against the limits and the rules every order obeys,
// whoever sent it. It fills in the default timeout. The first problem found
// is returned as an *Error naming the field.
func Validate(o *Order, l Limits) error {
	if err := CheckHost(o.Host); err != nil {
		return err
	}
	if o.Kind == "" {
		o.Kind = KindExec
	}
	if o.Kind != KindExec && o.Kind != KindScript && o.Kind != KindAction {
		return FieldError(CodeUnprocessable, "kind", "kind %q is not supported here", o.Kind)
	}
	if o.Kind == KindAction && o.Action == nil {
		// Only the action endpoints build an action order (action.go).
		return FieldError(CodeUnprocessable, "kind", "action orders are submitted through /v1/actions/{name}/run")
	}
	if o.Kind == KindScript && (o.Script == nil || len(o.Script.Body) == 0) {
		// Only the runbook endpoints build a script order (from a runbook file).
		return FieldError(CodeUnprocessable, "kind", "script orders are submitted through /v1/runbooks/{name}/execute")
	}
	// Labels a client chose: printable, and short enough for the indexes
	// that find orders by them (a B-tree entry holds at most ~2.7 kB).
	if len(o.CorrelationID) > MaxCorrelationBytes || HasControl(o.CorrelationID, false) {
		return FieldError(CodeInvalid, "correlation_id", "correlation_id must be printable text of at most %d bytes", MaxCorrelationBytes)
	}
	if len(o.IdempotencyKey) > MaxIdempotencyKeyBytes || HasControl(o.IdempotencyKey, false) {
		return FieldError(CodeInvalid, "Idempotency-Key", "the idempotency key must be printable text of at most %d bytes", MaxIdempotencyKeyBytes)
	}
	if o.Timeout > 0 && o.Timeout < time.Millisecond {
		// Stored in milliseconds: a shorter one would read as none.
		return FieldError(CodeInvalid, "timeout_seconds", "timeout_seconds must be at least 0.001")
	}
	if o.Command == "" {
		return FieldError(CodeInvalid, "command", "command is required")
	}
	if len(o.Command) > l.MaxCommandBytes {
		return FieldError(CodeTooLarge, "command", "command is longer than %d bytes", l.MaxCommandBytes)
	}
	if HasControl(o.Command, false) {
		return FieldError(CodeInvalid, "command", "command contains NUL or control characters")
	}
	if len(o.Args) > l.MaxArgs {
		return FieldError(CodeTooLarge, "args", "more than %d arguments", l.MaxArgs)
	}
	total := 0
	for _, a := range o.Args {
		if len(a) > l.MaxArgBytes {
			return FieldError(CodeTooLarge, "args", "an argument is longer than %d bytes", l.MaxArgBytes)
		}
		if HasControl(a, true) {
			return FieldError(CodeInvalid, "args", "an argument contains NUL or control characters")
		}
		total += len(a)
	}
	if total > l.MaxArgsBytes {
		return FieldError(CodeTooLarge, "args", "arguments are longer than %d bytes together", l.MaxArgsBytes)
	}
	if len(o.Env) > l.MaxEnv {
		return FieldError(CodeTooLarge, "env", "more than %d environment variables", l.MaxEnv)
	}
	for _, k := range envNames(o.Env) { // the first problem reported is the same every time
		v := o.Env[k]
		if !ValidEnvName(k) {
			return FieldError(CodeInvalid, "env", "environment variable name %q is not [A-Za-z_][A-Za-z0-9_]*", Printable(k))
		}
		if len(v) > l.MaxEnvBytes {
			return FieldError(CodeTooLarge, "env", "the value of %s is longer than %d bytes", k, l.MaxEnvBytes)
		}
		if HasControl(v, true) {
			return FieldError(CodeInvalid, "env", "the value of %s contains NUL or control characters", k)
		}
	}
	if len(o.Stdin) > l.MaxStdinBytes {
		return FieldError(CodeTooLarge, "stdin", "stdin is larger than %d bytes", l.MaxStdinBytes)
	}
	if o.RunAs != "" && !ValidUser(o.RunAs) {
		return FieldError(CodeInvalid, "run_as", "run_as is not a valid user name")
	}
	if o.Timeout < 0 {
		return FieldError(CodeInvalid, "timeout_seconds", "timeout_seconds must not be negative")
	}
	if o.Timeout == 0 {
		o.Timeout = l.DefaultTimeout
	}
	if o.Timeout > l.MaxTimeout {
		// The maximum in details too: a client whose flag is not
		// timeout_seconds (the CLI's --timeout) says it in its own terms.
		maxSecs := int(l.MaxTimeout / time.Second)
		e := FieldError(CodeUnprocessable, "timeout_seconds", "timeout_seconds is above the maximum of %d", maxSecs)
		e.Details["maximum_seconds"] = maxSecs
		return e
	}
	if o.MaxOutput < 0 {
		return FieldError(CodeInvalid, "max_output_bytes", "max_output_bytes must not be negative")
	}
	return nil
}

// HasControl reports NUL and other C0 control bytes (and DEL), and bytes
// that are not UTF-8. Text fields may carry tab, newline and carriage
// return.
func HasControl(s string, text bool) bool {
	if !utf8.ValidString(s) {
		return true // and PostgreSQL's text would refuse it
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == 0 || c == 0x7f {
			return true
		}
		if c < 0x20 && !(text && (c == '\t' || c == '\n' || c == '\r')) {
			return true
		}
	}
	return false
}

// Printable is s cut to 64 bytes and made valid UTF-8, to echo a name
// the client or a host policy refused in a message (the API's screen and
// the worker's host policy both).
func Printable(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// envNames are env's names, sorted; nil for none, with no allocation
// (slices.Sorted of maps.Keys made three even for an empty map, in
// Validate and again in Screen: docs/benchmarks.md, "The async submit,
// counted again").
func envNames(env map[string]string) []string {
	if len(env) == 0 {
		return nil
	}
	names := make([]string, 0, len(env))
	for k := range env {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}
