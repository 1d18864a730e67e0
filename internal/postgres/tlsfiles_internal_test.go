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

// TestTLSFileNamesOfAService: a service (service= in database_url, else
// PGSERVICE) takes its TLS files from its section of the service file
// (servicefile=, else PGSERVICEFILE, else ~/.pg_service.conf), below
// the URL's and above PGSSL*, as pgx reads them; the service file itself
// is looked at too. They were not looked at: a client certificate
// renewed there was never taken.
func TestTLSFileNamesOfAService(t *testing.T) {
	for _, k := range []string{"PGSSLCERT", "PGSSLKEY", "PGSSLROOTCERT", "PGSERVICE", "PGSERVICEFILE"} {
		t.Setenv(k, "")
	}
	home := t.TempDir()
	t.Setenv("HOME", home)
	homeFile, envFile := filepath.Join(home, ".pg_service.conf"), filepath.Join(t.TempDir(), "services.conf")
	for file, dir := range map[string]string{homeFile: "/svc", envFile: "/env-svc"} {
		conf := "[ot]\nhost=db\nsslcert=" + dir + "/c.crt\nsslkey=" + dir + "/c.key\nsslrootcert=" + dir + "/ca.crt\n\n[bare]\nhost=db2\n"
		if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	missing := filepath.Join(home, "missing.conf")
	for _, tc := range []struct {
		name, dsn string
		env       map[string]string
		want      []string
	}{
		{"~/.pg_service.conf", "service=ot", nil, []string{"/svc/c.crt", "/svc/c.key", "/svc/ca.crt", homeFile}},
		{"PGSERVICEFILE", "service=ot", map[string]string{"PGSERVICEFILE": envFile},
			[]string{"/env-svc/c.crt", "/env-svc/c.key", "/env-svc/ca.crt", envFile}},
		{"PGSERVICE", "host=db", map[string]string{"PGSERVICE": "ot"}, []string{"/svc/c.crt", "/svc/c.key", "/svc/ca.crt", homeFile}},
		{"servicefile in the URL", "postgres://u@db/orderly?service=ot&servicefile=" + envFile, nil,
			[]string{"/env-svc/c.crt", "/env-svc/c.key", "/env-svc/ca.crt", envFile}},
		{"URL over the service", "postgres://u@db/orderly?service=ot&sslcert=/u/c.crt", nil,
			[]string{"/u/c.crt", "/svc/c.key", "/svc/ca.crt", homeFile}},
		{"the service over PGSSL*", "service=ot", map[string]string{"PGSSLCERT": "/env/c.crt", "PGSSLROOTCERT": "/env/ca.crt"},
			[]string{"/svc/c.crt", "/svc/c.key", "/svc/ca.crt", homeFile}},
		{"a service naming no file", "service=bare", map[string]string{"PGSSLROOTCERT": "/env/ca.crt"}, []string{"/env/ca.crt", homeFile}},
		{"a service file missing", "service=ot", map[string]string{"PGSERVICEFILE": missing}, []string{missing}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			if got := tlsFileNames(tc.dsn); !slices.Equal(got, tc.want) {
				t.Errorf("tlsFileNames(%q) = %q, want %q", tc.dsn, got, tc.want)
			}
		})
	}
}

// TestSignatureSeesAWriteInPlaceKeepingSizeAndTime: a file written over
// in place with as many bytes and its modification time set back (`cp
// -p` of a renewed certificate of the same size) has another signature.
// Inode, size and modification time alone were all the same, and the
// renewal was not taken.
func TestSignatureSeesAWriteInPlaceKeepingSizeAndTime(t *testing.T) {
	file := filepath.Join(t.TempDir(), "client.crt")
	if err := os.WriteFile(file, []byte("certificate 1"), 0o600); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	sig := signature([]string{file})
	if err := os.WriteFile(file, []byte("certificate 2"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(file, before.ModTime(), before.ModTime()); err != nil {
		t.Fatal(err)
	}
	if after, err := os.Stat(file); err != nil || after.Size() != before.Size() || !after.ModTime().Equal(before.ModTime()) {
		t.Fatalf("the write did not keep size and time: %v %v", after, err)
	}
	if got := signature([]string{file}); got == sig {
		t.Fatalf("the signature of a file written in place, size and time kept, did not change: %s", got)
	}
}
