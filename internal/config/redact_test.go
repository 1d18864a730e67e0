package config

import "testing"

// TestRedactUnparsedURLs: a URL whose password holds a character a URL
// reserves does not parse as one with a user (or parses as a host and a
// path), and was printed whole; everything between its scheme and its
// last @ is hidden now. URLs that parse keep their user.
func TestRedactUnparsedURLs(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://orderly:ab/s3cret@db:5432/orderly": "postgres://***@db:5432/orderly",
		"postgres://orderly:12/s3cret@db:5432/orderly": "postgres://***@db:5432/orderly",
		"postgresql://orderly:s3%zzcret@db/orderly":    "postgresql://***@db/orderly",
		"postgres://orderly:s3cret@db:5432/orderly":    "postgres://orderly:***@db:5432/orderly",
		"postgres://orderly@db/orderly?passfile=/x":    "postgres://orderly@db/orderly?passfile=/x",
		"host=db user=orderly password=s3cret":         "host=db user=orderly password=***",
	} {
		if got := RedactDSN(in); got != want {
			t.Errorf("RedactDSN(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"nats://orderly:ab/s3cret@n1:4222":     "nats://***@n1:4222",
		"nats://n1:4222,nats://t0k%zz@n2:4222": "nats://n1:4222,nats://***@n2:4222",
		"nats://orderly:s3cret@n1:4222":        "nats://orderly:***@n1:4222",
		"nats://n1:4222":                       "nats://n1:4222",
		// A password holding / with a port of digits before it parses,
		// as a host and a path: no user, and still hidden.
		"nats://orderly:12/s3cret@n1:4222": "nats://***@n1:4222",
		// Lists, as nats.url takes them; a user without a password is
		// a token to NATS, hidden whole.
		"nats://orderly:s3cret@n1:4222,nats://n2:4222": "nats://orderly:***@n1:4222,nats://n2:4222",
		"nats://t0ken@n1:4222":                         "nats://***@n1:4222",
		"nats://127.0.0.1:4222":                        "nats://127.0.0.1:4222",
	} {
		if got := RedactNATS(in); got != want {
			t.Errorf("RedactNATS(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRedactSSLPasswordInAURL: pgx takes the client key's passphrase as
// sslpassword, in a URL's query as in a keyword/value string. The
// keyword form's was hidden (its pattern matches the end of the word),
// the URL's printed whole: in serve's banner, and in a config printed
// through fmt, slog or JSON. So was a URL's ?password= when the URL named
// no user.
func TestRedactSSLPasswordInAURL(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://orderly@db/orderly?sslkey=/k&sslpassword=s3cret":        "postgres://orderly@db/orderly?sslkey=/k&sslpassword=***",
		"postgres://orderly:pw@db/orderly?sslpassword=s3cret":               "postgres://orderly:***@db/orderly?sslpassword=***",
		"host=db user=orderly sslkey=/k sslpassword=s3cret":                 "host=db user=orderly sslkey=/k sslpassword=***",
		"postgres://orderly@db/orderly?sslmode=verify-full&sslrootcert=/ca": "postgres://orderly@db/orderly?sslmode=verify-full&sslrootcert=/ca",
		// No user: the default one. Its query was not read at all.
		"postgres://db/orderly?sslpassword=s3cret": "postgres://db/orderly?sslpassword=***",
		"postgres://db/orderly?password=s3cret":    "postgres://db/orderly?password=***",
		"postgres://db/orderly":                    "postgres://db/orderly",
	} {
		if got := RedactDSN(in); got != want {
			t.Errorf("RedactDSN(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRedactDSNAsLibpqReadsIt: a password is hidden where libpq (and
// pgx, whose parser is libpq's) reads one, not where net/url does. A
// URL's query splits on "&" alone: net/url dropped a pair holding a ";"
// and printed its password whole; it took a "#" for a fragment and
// printed what followed it after the mask. A password in the user part
// holding a "?" hid the query behind it. An unquoted keyword value takes
// a backslash-escaped blank, and the mask stopped at it.
func TestRedactDSNAsLibpqReadsIt(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u@db/o?password=s3c;ret":                     "postgres://u@db/o?password=***",
		"postgres://u@db/o?sslmode=require&password=s3c#ret":     "postgres://u@db/o?sslmode=require&password=***",
		"postgres://u@db/o?sslkey=/k&sslpassword=a;b&sslcert=/c": "postgres://u@db/o?sslkey=/k&sslpassword=***&sslcert=/c",
		"postgres://u@db/o?pass%77ord=s3cret":                    "postgres://u@db/o?pass%77ord=***",
		"postgres://u:a?b@db/o?password=s3cret":                  "postgres://***@db/o?password=***",
		"postgres://u@db/o?application_name=a;b#c":               "postgres://u@db/o?application_name=a;b#c",
		`host=db password=s3c\ ret user=u`:                       "host=db password=*** user=u",
		`host=db password='s3c ret`:                              "host=db password=***",
	} {
		if got := RedactDSN(in); got != want {
			t.Errorf("RedactDSN(%q) = %q, want %q", in, got, want)
		}
	}
}
