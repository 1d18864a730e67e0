package postgres

import (
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/orderly-run/orderly/internal/config"
)

// RedactParseError is err with the database_url that pgx could not parse
// printed as config.RedactDSN prints it. pgx's ParseConfigError prints
// the string with its own redaction, which finds a keyword/value
// password only written "password=" and cut at the first blank: a
// `password = s3cret`, `password=s3c\ ret` or `password='a\'b c'` that
// libpq and pgx take came out whole or in part ("orderly stopped",
// migrate's error, the log line of TLS files renewed badly, every line
// that carries such an error). The text after the string (pgx's cause)
// is kept; err's other wrappers are kept as text. Any other error is
// returned as it is.
func RedactParseError(err error) error {
	var pe *pgconn.ParseConfigError
	if !errors.As(err, &pe) {
		return err
	}
	text := pe.Error()
	// pgx's text is "cannot parse `<its redaction>`: <cause>": the same
	// without a cause is the part to replace.
	cause, ok := strings.CutPrefix(text, (&pgconn.ParseConfigError{ConnString: pe.ConnString}).Error())
	safe := "cannot parse `" + config.RedactDSN(pe.ConnString) + "`: " + cause
	if !ok { // another pgx's text: say no more than the cause it wraps
		safe = "cannot parse database_url"
		if inner := errors.Unwrap(pe); inner != nil {
			safe += ": " + inner.Error()
		}
	}
	return parseError{text: strings.Replace(err.Error(), text, safe, 1), err: errors.Unwrap(pe)}
}

// parseError is a parse error of database_url with its password hidden.
// It unwraps to what pgx's error wrapped (a file not found, ...), never
// to pgx's error, whose ConnString holds the password.
type parseError struct {
	text string
	err  error
}

func (e parseError) Error() string { return e.text }
func (e parseError) Unwrap() error { return e.err }
