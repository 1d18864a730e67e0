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
		"postgres://orderly@db/orderly?sslkey=/k&sslpassword=s3cret":        "postgres://orderly@db/orderly?sslkey=%2Fk&sslpassword=***",
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
