package postgres

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestTLSFileNamesOfEachFormOfTheURL: the files a new connection looks
// at for a change are the ones pgx reads, whichever way database_url is
// written: a URL, keyword=value pairs, or PGSSL* for what it leaves out.
// sslrootcert=system is the system's CAs, no file to look at.
func TestTLSFileNamesOfEachFormOfTheURL(t *testing.T) {
	t.Setenv("PGSSLCERT", "")
	t.Setenv("PGSSLKEY", "")
	t.Setenv("PGSSLROOTCERT", "")
	home := t.TempDir()
	t.Setenv("HOME", home)
	cases := []struct {
		name, dsn string
		env       map[string]string
		want      []string
	}{
		{"url", "postgres://u@db/orderly?sslmode=verify-full&sslrootcert=/etc/o/ca.crt&sslcert=/etc/o/c.crt&sslkey=/etc/o/c.key",
			nil, []string{"/etc/o/c.crt", "/etc/o/c.key", "/etc/o/ca.crt"}},
		{"keyword", "host=db dbname=orderly sslmode=verify-ca sslcert='/etc/o/c.crt' sslkey=/etc/o/c.key",
			nil, []string{"/etc/o/c.crt", "/etc/o/c.key"}},
		{"keyword spaced and quoted", `host=db sslcert = /etc/o/c.crt sslkey= '/etc/o/my key\'s.key' sslrootcert ='/etc/o/ca.crt'`,
			nil, []string{"/etc/o/c.crt", "/etc/o/my key's.key", "/etc/o/ca.crt"}},
		// libpq's quoting: a path with a blank, quoted or escaped, and
		// blanks around "=" (split on blanks, these were missed or cut).
		{"keyword quoted with a blank", `host=db sslmode=verify-full sslcert='/etc/my certs/c.crt' sslkey = '/etc/my certs/c.key' sslrootcert='/etc/o/it\'s ca.crt'`,
			nil, []string{"/etc/my certs/c.crt", "/etc/my certs/c.key", "/etc/o/it's ca.crt"}},
		{"keyword escaped blank", `host=db sslcert=/etc/my\ certs/c.crt sslkey=/etc/my\ certs/c.key dbname=orderly`,
			nil, []string{"/etc/my certs/c.crt", "/etc/my certs/c.key"}},
		// The query as libpq reads it, not as net/url does: "+" is no
		// blank, ";" no separator, "#" no fragment, in a value or in the
		// password before it; %XX decoded, blanks around a value skipped.
		{"url plus, semicolon, hash", "postgres://u:pa#ss@db/orderly?sslcert=/etc/pg+tls/c.crt&sslkey=/etc/a;b/c.key&sslrootcert=/etc/o/ca%231.crt",
			nil, []string{"/etc/pg+tls/c.crt", "/etc/a;b/c.key", "/etc/o/ca#1.crt"}},
		{"url several hosts, spaced", "postgresql://u@h1:5432,h2:5433/orderly?sslmode=verify-full&sslcert= /etc/o/c%20d.crt &sslkey=/etc/o/c.key",
			nil, []string{"/etc/o/c d.crt", "/etc/o/c.key"}},
		{"environment", "postgres://u@db/orderly?sslmode=verify-full",
			map[string]string{"PGSSLCERT": "/env/c.crt", "PGSSLKEY": "/env/c.key", "PGSSLROOTCERT": "/env/ca.crt"},
			[]string{"/env/c.crt", "/env/c.key", "/env/ca.crt"}},
		{"url over environment", "postgres://u@db/orderly?sslcert=/u/c.crt&sslkey=/u/c.key",
			map[string]string{"PGSSLCERT": "/env/c.crt", "PGSSLKEY": "/env/c.key"},
			[]string{"/u/c.crt", "/u/c.key"}},
		{"system CAs", "postgres://u@db/orderly?sslmode=verify-full&sslrootcert=system", nil, nil},
		{"no TLS file", "postgres://u@db/orderly?sslmode=require", nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			if got := tlsFileNames(tc.dsn); !slices.Equal(got, tc.want) {
				t.Errorf("tlsFileNames(%q) = %q, want %q", tc.dsn, got, tc.want)
			}
		})
	}

	// libpq's defaults in ~/.postgresql, which pgx reads for a setting
	// given nowhere else: a client certificate only with its key.
	dir := filepath.Join(home, ".postgresql")
	crt, key, root := filepath.Join(dir, "postgresql.crt"), filepath.Join(dir, "postgresql.key"), filepath.Join(dir, "root.crt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{crt, root} {
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, dsn string
		want      []string
	}{
		{"home CA, no key", "postgres://u@db/orderly?sslmode=verify-full", []string{root}},
		{"URL over home", "postgres://u@db/orderly?sslrootcert=/u/ca.crt", []string{"/u/ca.crt"}},
	} {
		if got := tlsFileNames(tc.dsn); !slices.Equal(got, tc.want) {
			t.Errorf("%s: tlsFileNames(%q) = %q, want %q", tc.name, tc.dsn, got, tc.want)
		}
	}
	if err := os.WriteFile(key, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, want := tlsFileNames("host=db dbname=orderly"), []string{crt, key, root}; !slices.Equal(got, want) {
		t.Errorf("home certificate and key: tlsFileNames = %q, want %q", got, want)
	}
}
