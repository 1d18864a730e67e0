package postgres_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly-run/orderly/internal/pgembed"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// testCA signs the server's and the clients' certificates of a test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "orderly test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a PEM certificate and key for cn, with serial.
func (ca *testCA) issue(t *testing.T, cn string, serial int64, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// postgresWithClientCerts starts a cluster of its own that listens on
// 127.0.0.1 with ssl=on and lets in over TCP only a client certificate
// ca signed whose CN is the login (hostssl … cert). It returns the
// address's port.
func postgresWithClientCerts(t *testing.T, ca *testCA) int {
	t.Helper()
	// Searchable by the postgres user, which runs the cluster.
	dir, err := os.MkdirTemp("", "orderly-pgtls-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	serverCert, serverKey := ca.issue(t, "127.0.0.1", 100, true)
	files := map[string][]byte{
		"server.crt": serverCert,
		"server.key": serverKey,
		"ca.crt":     ca.pem,
		"pg_hba.conf": []byte("local all all trust\n" +
			"hostssl all all 127.0.0.1/32 cert\n"),
	}
	// The server refuses a key others can read, and one it does not own
	// unless root owns it and its group is the server's.
	owner := -1
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		owner, _ = strconv.Atoi(u.Uid)
	}
	for name, b := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if owner >= 0 {
			if err := os.Chown(p, owner, -1); err != nil {
				t.Fatal(err)
			}
		}
	}
	port := testenv.FreePort(t)
	srv, err := pgembed.Start(testenv.Context(t), pgembed.Options{
		Dir:      filepath.Join(dir, "pg"),
		Port:     port,
		Database: "orderly",
		ExtraSettings: map[string]string{
			"listen_addresses": "127.0.0.1",
			"ssl":              "on",
			"ssl_cert_file":    filepath.Join(dir, "server.crt"),
			"ssl_key_file":     filepath.Join(dir, "server.key"),
			"ssl_ca_file":      filepath.Join(dir, "ca.crt"),
			"hba_file":         filepath.Join(dir, "pg_hba.conf"),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = srv.Stop(ctx)
	})
	return port
}

// renewAs has install write cert and key as a renewer does: a new file
// renamed over the old one.
func renewAs(t *testing.T, certFile, keyFile string) (install func(cert, key []byte)) {
	return func(cert, key []byte) {
		t.Helper()
		for file, b := range map[string][]byte{certFile: cert, keyFile: key} {
			if err := os.WriteFile(file+".new", b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(file+".new", file); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// presentedSerial returns the serial of the client certificate a new
// connection of pool presented, as the server saw it.
func presentedSerial(t *testing.T, ctx context.Context, pool *pgxpool.Pool) string {
	t.Helper()
	pool.Reset()
	var serial string
	if err := pool.QueryRow(ctx, "SELECT client_serial::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&serial); err != nil {
		t.Fatal(err)
	}
	return serial
}

// TestNewConnectionsPresentTheRenewedClientCertificate: a client
// certificate renewed in the files database_url's sslcert and sslkey
// name is what the connections a running process makes after it present
// (docs/deploy.md, "TLS to NATS and PostgreSQL"). pgx read the files once,
// when it parsed the URL, and every later connection presented the
// certificate of the start until the process restarted; after that
// certificate expired, PostgreSQL refused them all. A replacement that
// does not load keeps the last good certificate and is logged. The same
// holds for the keyword=value form with files under a directory whose
// name has a blank (quoted, as libpq reads it), which were not looked at,
// and for a URL whose paths hold "+", ";" or "#", which net/url misread.
func TestNewConnectionsPresentTheRenewedClientCertificate(t *testing.T) {
	ca := newTestCA(t)
	port := postgresWithClientCerts(t, ca)
	forms := []struct {
		name, dir string
		dsn       func(caFile, certFile, keyFile string) string
	}{
		{"url", "certs", func(caFile, certFile, keyFile string) string {
			return "postgres://postgres@127.0.0.1:" + strconv.Itoa(port) + "/orderly?sslmode=verify-full" +
				"&sslrootcert=" + caFile + "&sslcert=" + certFile + "&sslkey=" + keyFile
		}},
		// libpq reads a URL's query itself: a "+" is a plus, ";" and
		// "#" are characters of the value. net/url's reading (a blank,
		// the pair dropped, a fragment) had the process look at files
		// that do not exist, and take no renewal.
		{"url, + ; # in the directory", "pg+tls;#1", func(caFile, certFile, keyFile string) string {
			return "postgres://postgres@127.0.0.1:" + strconv.Itoa(port) + "/orderly?sslmode=verify-full" +
				"&sslrootcert=" + caFile + "&sslcert=" + certFile + "&sslkey=" + keyFile
		}},
		{"keyword quoted with a blank", "my certs", func(caFile, certFile, keyFile string) string {
			return "host=127.0.0.1 port=" + strconv.Itoa(port) + " user=postgres dbname=orderly sslmode=verify-full" +
				" sslrootcert='" + caFile + "' sslcert = '" + certFile + "' sslkey='" + keyFile + "'"
		}},
		// The broken replacement's log line carries pgx's parse error,
		// which printed a password written "password = …" whole.
		{"keyword with a spaced password", "certs", func(caFile, certFile, keyFile string) string {
			return "host=127.0.0.1 port=" + strconv.Itoa(port) + " user=postgres dbname=orderly sslmode=verify-full" +
				" password = " + unusedPassword + " sslrootcert=" + caFile + " sslcert=" + certFile + " sslkey=" + keyFile
		}},
	}
	for _, form := range forms {
		t.Run(form.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), form.dir)
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			certFile, keyFile, caFile := filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key"), filepath.Join(dir, "ca.crt")
			presentsRenewals(t, ca, form.dsn(caFile, certFile, keyFile), certFile, keyFile, caFile)
		})
	}
}

// unusedPassword is a password database_url may carry beside the client
// certificate the server asks for (hostssl … cert reads none): it must
// never be printed.
const unusedPassword = "Sec4etPGpass"

// presentsRenewals renews the client certificate in certFile and keyFile
// under a pool of dsn, checking the serial each new connection presents.
func presentsRenewals(t *testing.T, ca *testCA, dsn, certFile, keyFile, caFile string) {
	t.Helper()
	install := renewAs(t, certFile, keyFile)
	if err := os.WriteFile(caFile, ca.pem, 0o644); err != nil {
		t.Fatal(err)
	}
	install(ca.issue(t, "postgres", 1001, false))

	var logs testenv.LogBuffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, nil)))
	t.Cleanup(func() { slog.SetDefault(prev) })

	ctx := testenv.Context(t)
	pool, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	presented := func() string { t.Helper(); return presentedSerial(t, ctx, pool) }
	if got := presented(); got != "1001" {
		t.Fatalf("the first connection presented serial %s, want 1001", got)
	}

	install(ca.issue(t, "postgres", 1002, false))
	if got := presented(); got != "1002" {
		t.Fatalf("after the renewal a new connection presented serial %s, want the renewed 1002", got)
	}

	// Half written: a certificate whose key is not in the file yet.
	cert, _ := ca.issue(t, "postgres", 1003, false)
	install(cert, []byte("-----BEGIN PRIVATE KEY-----\n"))
	for range 2 {
		if got := presented(); got != "1002" {
			t.Fatalf("after a broken replacement a new connection presented serial %s, want the last good 1002", got)
		}
	}
	if n := strings.Count(logs.String(), "level=ERROR"); n != 1 || !strings.Contains(logs.String(), keyFile) {
		t.Fatalf("the broken replacement logged %d ERRORs (want 1, naming %s):\n%s", n, keyFile, logs.String())
	}
	if strings.Contains(logs.String(), unusedPassword) {
		t.Fatalf("the broken replacement's log printed database_url's password:\n%s", logs.String())
	}

	install(ca.issue(t, "postgres", 1004, false))
	if got := presented(); got != "1004" {
		t.Fatalf("after the files were repaired a new connection presented serial %s, want 1004", got)
	}
}

// TestNewConnectionsPresentTheRenewedCertificateOfTheHomeDirectory: a
// database_url that names no TLS file takes libpq's defaults, as pgx
// does, ~/.postgresql/postgresql.crt and postgresql.key (the client
// certificate) and root.crt (the CA), and a renewal of those is what
// the next connection presents, as for files the URL names. Only the
// URL's and PGSSL*'s files were looked at: a running process presented
// the certificate of its start until it restarted, and once that one
// expired PostgreSQL refused every new connection.
func TestNewConnectionsPresentTheRenewedCertificateOfTheHomeDirectory(t *testing.T) {
	ca := newTestCA(t)
	port := postgresWithClientCerts(t, ca)

	home := t.TempDir()
	t.Setenv("HOME", home)
	for _, k := range []string{"PGSSLCERT", "PGSSLKEY", "PGSSLROOTCERT", "PGSERVICE", "PGSERVICEFILE"} {
		t.Setenv(k, "")
	}
	dir := filepath.Join(home, ".postgresql")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "root.crt"), ca.pem, 0o644); err != nil {
		t.Fatal(err)
	}
	install := renewAs(t, filepath.Join(dir, "postgresql.crt"), filepath.Join(dir, "postgresql.key"))
	install(ca.issue(t, "postgres", 2001, false))

	ctx := testenv.Context(t)
	pool, err := postgres.Open(ctx, "postgres://postgres@127.0.0.1:"+strconv.Itoa(port)+"/orderly?sslmode=verify-full")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if got := presentedSerial(t, ctx, pool); got != "2001" {
		t.Fatalf("the first connection presented serial %s, want 2001 (~/.postgresql/postgresql.crt)", got)
	}
	install(ca.issue(t, "postgres", 2002, false))
	if got := presentedSerial(t, ctx, pool); got != "2002" {
		t.Fatalf("after the renewal in ~/.postgresql a new connection presented serial %s, want the renewed 2002", got)
	}
}

// TestNewConnectionsPresentTheRenewedCertificateOfAService: a
// database_url that names a service (service=…) takes the TLS files its
// section of the service file names, as pgx does, from PGSERVICEFILE or
// ~/.pg_service.conf; a renewal of those is what the next connection
// presents, as for files the URL names. They were not looked at: a
// running process presented the certificate of its start until it
// restarted, and once that one expired PostgreSQL refused every new
// connection.
func TestNewConnectionsPresentTheRenewedCertificateOfAService(t *testing.T) {
	ca := newTestCA(t)
	port := postgresWithClientCerts(t, ca)
	for _, k := range []string{"PGSSLCERT", "PGSSLKEY", "PGSSLROOTCERT", "PGSERVICE", "PGSERVICEFILE"} {
		t.Setenv(k, "")
	}
	home := t.TempDir()
	t.Setenv("HOME", home)
	for _, form := range []struct {
		name, file string
		env        bool
	}{
		{"PGSERVICEFILE", filepath.Join(t.TempDir(), "services.conf"), true},
		{"~/.pg_service.conf", filepath.Join(home, ".pg_service.conf"), false},
	} {
		t.Run(form.name, func(t *testing.T) {
			if form.env {
				t.Setenv("PGSERVICEFILE", form.file)
			}
			dir := t.TempDir()
			certFile, keyFile, caFile := filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key"), filepath.Join(dir, "ca.crt")
			conf := "[orderly]\nhost=127.0.0.1\nport=" + strconv.Itoa(port) + "\nuser=postgres\ndbname=orderly\nsslmode=verify-full\n" +
				"sslrootcert=" + caFile + "\nsslcert=" + certFile + "\nsslkey=" + keyFile + "\n"
			if err := os.WriteFile(form.file, []byte(conf), 0o600); err != nil {
				t.Fatal(err)
			}
			presentsRenewals(t, ca, "service=orderly", certFile, keyFile, caFile)
		})
	}
}
