package postgres_test

import (
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestADatabaseURLPgxRefusesIsNamedWithoutItsPassword: the error of a
// database_url that pgx cannot parse (here an sslmode it does not know)
// names the string with its password hidden, in each way libpq and pgx
// read a password, and keeps pgx's cause. pgx's own redaction finds a
// keyword/value password only written "password=" and cut at the first
// blank: "orderly stopped" printed the rest.
func TestADatabaseURLPgxRefusesIsNamedWithoutItsPassword(t *testing.T) {
	const secret = "Sec4et"
	cases := []struct{ name, dsn string }{
		{"keyword, blanks around =", "host=127.0.0.1 port=1 user=u password = " + secret + " sslmode=bogus"},
		{"keyword, escaped blank", `host=127.0.0.1 port=1 user=u password=x\ ` + secret + " sslmode=bogus"},
		{"keyword, quoted with an escaped quote", `host=127.0.0.1 port=1 user=u password='x\' ` + secret + "' sslmode=bogus"},
		{"keyword, key passphrase", "host=127.0.0.1 port=1 user=u sslpassword = " + secret + " sslmode=bogus"},
		{"url, user part", "postgres://u:" + secret + "@127.0.0.1:1/orderly?sslmode=bogus"},
		{"url, query", "postgres://u@127.0.0.1:1/orderly?password=" + secret + ";x&sslmode=bogus"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pool, err := postgres.Open(testenv.Context(t), tc.dsn)
			if err == nil {
				pool.Close()
				t.Fatal("opened a database_url with sslmode=bogus")
			}
			if strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "sslmode is invalid") {
				t.Errorf("got %q: want pgx's cause, without the password", err)
			}
		})
	}
}
