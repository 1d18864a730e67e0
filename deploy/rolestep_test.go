package deploy

// The machinery of worker_role_test.go: the secrets, the role step run
// with psql as its container would, and a worker's login checked.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgpassfile"
	"github.com/jackc/pgx/v5"
	"go.yaml.in/yaml/v3"

	"github.com/orderly-run/orderly/internal/pgembed"
	"github.com/orderly-run/orderly/internal/testenv"
)

// makeSecrets runs deploy/compose/secrets.sh in a copy of its directory,
// with this checkout's orderly first on PATH (its seeds and auth.conf are
// `orderly nats-auth`'s), and returns the secrets directory it made.
func makeSecrets(t *testing.T, args ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"compose/secrets.sh", "compose/api.yaml"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	orderly, err := orderlyBin()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(orderly, filepath.Join(bin, "orderly")); err != nil {
		t.Fatal(err)
	}
	runSecrets(t, filepath.Join(dir, "compose/secrets"), args...)
	return filepath.Join(dir, "compose/secrets")
}

// runSecrets runs the secrets.sh of makeSecrets' copy again, with args.
func runSecrets(t *testing.T, secrets string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(secrets, "../secrets.sh"), args...)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Join(secrets, "../../bin")+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("secrets.sh %q: %v\n%s", args, err, out)
	}
	return string(out)
}

// orderlyBinDir holds orderlyBin's build; TestMain removes it.
var orderlyBinDir string

// orderlyBin builds this checkout's orderly, once per test binary.
var orderlyBin = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "orderly-deploy-bin-")
	if err != nil {
		return "", err
	}
	orderlyBinDir = dir
	bin := filepath.Join(dir, "orderly")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/orderly")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/orderly: %v\n%s", err, out)
	}
	return bin, nil
})

// rotatePassword makes secrets.sh write a new password for the workers'
// login, as README.md says to.
func rotatePassword(t *testing.T, secrets string) {
	t.Helper()
	pgpass := filepath.Join(secrets, "worker.pgpass")
	old, err := os.ReadFile(pgpass)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(secrets, "worker_pg_password")); err != nil {
		t.Fatal(err)
	}
	runSecrets(t, secrets)
	if now, err := os.ReadFile(pgpass); err != nil || bytes.Equal(now, old) {
		t.Fatalf("secrets.sh did not write a new worker.pgpass (%v)", err)
	}
}

// runRoleStep runs a deployment's role step (argv and environment as its
// container has them, files as mapped) against the database at dsn, and
// returns the login it makes. The step connects where the migrations do
// (migrateURL, when not empty); here it connects to dsn. The roles are
// the cluster's, dropped when the test ends.
func runRoleStep(t *testing.T, dsn string, argv []string, env, files map[string]string, migrateURL string) string {
	t.Helper()
	// sh -c '… exec psql "$@"' psql ARGS…: libpq ignores a pgpass file
	// that its group may read, as a mounted secret is, so the script
	// gives psql a private copy.
	if len(argv) < 4 || argv[0] != "sh" || argv[1] != "-c" || !strings.Contains(argv[2], `exec psql "$@"`) || argv[3] != "psql" {
		t.Fatalf("the role step runs %q, want sh -c '… exec psql \"$@\"' psql …", argv)
	}
	bin, err := pgembed.FindBinaries()
	if err != nil {
		t.Fatal(err)
	}
	paths := make([]string, 0, len(files))
	for in := range files {
		paths = append(paths, in)
	}
	// Longest first: no path is replaced inside a longer one.
	slices.SortFunc(paths, func(a, b string) int { return len(b) - len(a) })
	var pairs []string
	for _, in := range paths {
		pairs = append(pairs, in, files[in])
	}
	r := strings.NewReplacer(pairs...)
	args := slices.Clone(argv[4:])
	var login, sqlFile string
	for i, a := range args {
		switch {
		case a == "-d" && i+1 < len(args):
			if migrateURL != "" {
				checkSameDatabase(t, args[i+1], migrateURL)
			}
			args[i+1] = dsn
			continue
		case i > 0 && args[i-1] == "-d":
			continue
		case strings.HasPrefix(a, "login="):
			login = strings.TrimPrefix(a, "login=")
		case i > 0 && args[i-1] == "-f":
			sqlFile = r.Replace(a)
		}
		args[i] = r.Replace(a)
	}
	if login == "" || !sameFile(sqlFile, roleSQL) {
		t.Fatalf("the role step runs %q: no login, or not %s", argv, roleSQL)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", slices.Concat([]string{"-c", r.Replace(argv[2]), "psql"}, args)...)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(e string) bool {
		return strings.HasPrefix(e, "PG") || strings.HasPrefix(e, "PATH=") || strings.HasPrefix(e, "TMPDIR=")
	})
	cmd.Env = append(cmd.Env, "PATH="+bin+":"+os.Getenv("PATH"), "TMPDIR="+t.TempDir())
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+r.Replace(v))
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("the role step: %v\n%s", err, stderr.String())
	}
	// The test cluster trusts local connections: a password file libpq
	// ignored would pass here and fail against a real server.
	if strings.Contains(stderr.String(), "password file") {
		t.Errorf("the role step: psql ignored its password file:\n%s", stderr.String())
	}
	return login
}

// dropRolesAtEnd drops the worker role and login (they are the cluster's,
// not the test database's) when the test ends.
func dropRolesAtEnd(t *testing.T, dsn, login string) {
	t.Cleanup(func() {
		conn := connect(t, dsn)
		for _, q := range []string{"DROP OWNED BY " + login + ", orderly_worker", "DROP ROLE " + login, "DROP ROLE orderly_worker"} {
			if _, err := conn.Exec(context.Background(), q); err != nil {
				t.Errorf("%s: %v", q, err)
			}
		}
	})
}

// sameFile reports whether two paths name the same file.
func sameFile(a, b string) bool {
	x, err1 := os.Stat(a)
	y, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(x, y)
}

// checkSameDatabase fails unless the role step's URL names the user,
// host and database the migrations' does: orderly's own role, which owns
// the tables it grants on.
func checkSameDatabase(t *testing.T, step, migrate string) {
	t.Helper()
	a, err1 := url.Parse(step)
	b, err2 := url.Parse(migrate)
	if err1 != nil || err2 != nil || a.User.Username() != b.User.Username() || a.Host != b.Host || a.Path != b.Path {
		t.Errorf("the role step connects to %s, the migrations to %s", step, migrate)
	}
}

// checkWorkerLogin connects as a worker with databaseURL does (the login,
// database and password from its pgpass file) to the database at dsn: the
// login must be the one the step made, its password the pgpass file's,
// and it must pass the worker's start check in the orderly_worker role.
func checkWorkerLogin(t *testing.T, dsn, login, databaseURL, pgpass string) {
	t.Helper()
	u, err := url.Parse(databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	if u.User.Username() != login {
		t.Fatalf("the worker logs in as %q, the role step makes %q", u.User.Username(), login)
	}
	pf, err := pgpassfile.ReadPassfile(pgpass)
	if err != nil {
		t.Fatal(err)
	}
	port := u.Port()
	if port == "" {
		port = "5432"
	}
	password := pf.FindPassword(u.Hostname(), port, strings.TrimPrefix(u.Path, "/"), login)
	if password == "" {
		t.Fatalf("%s has no password for %s", pgpass, databaseURL)
	}
	// The test cluster trusts every local connection: compare the
	// password with the server's verifier instead of logging in with it.
	admin := connect(t, dsn)
	var verifier string
	if err := admin.QueryRow(t.Context(), `SELECT rolpassword FROM pg_authid WHERE rolname = $1 AND rolcanlogin`, login).Scan(&verifier); err != nil {
		t.Fatalf("login %s: %v", login, err)
	}
	if !scramMatches(t, verifier, password) {
		t.Errorf("the password of %s in PostgreSQL is not the one in %s", login, pgpass)
	}

	wu, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	wu.User = url.User(login)
	store, pool := testenv.Store(t, wu.String())
	if err := store.CheckSchema(t.Context()); err != nil {
		t.Errorf("the worker's start check as %s: %v", login, err)
	}
	var member bool
	if err := pool.QueryRow(t.Context(), `SELECT pg_has_role('orderly_worker', 'MEMBER')`).Scan(&member); err != nil || !member {
		t.Errorf("%s in orderly_worker: %v %v", login, member, err)
	}
	_, err = pool.Exec(t.Context(), `INSERT INTO orders (id, host, command, principal) VALUES (gen_random_uuid(), 'x', 'true', 'x')`)
	if err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("%s inserted an order: %v", login, err)
	}
	pool.Close()
}

// connect opens a connection to dsn, closed when the test ends.
func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// scramMatches reports whether password is the one a SCRAM-SHA-256
// verifier of pg_authid was made from (RFC 5802: StoredKey is
// H(HMAC(Hi(password, salt, i), "Client Key"))).
func scramMatches(t *testing.T, verifier, password string) bool {
	t.Helper()
	m := regexp.MustCompile(`^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):`).FindStringSubmatch(verifier)
	if m == nil {
		t.Fatalf("not a SCRAM-SHA-256 verifier: %q", verifier)
	}
	iter, _ := strconv.Atoi(m[1])
	salt, err1 := base64.StdEncoding.DecodeString(m[2])
	stored, err2 := base64.StdEncoding.DecodeString(m[3])
	if err1 != nil || err2 != nil {
		t.Fatalf("verifier %q: %v %v", verifier, err1, err2)
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, iter, sha256.Size)
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, salted)
	mac.Write([]byte("Client Key"))
	sum := sha256.Sum256(mac.Sum(nil))
	return hmac.Equal(sum[:], stored)
}

// readDatabaseURL returns the database_url of an orderly config file.
func readDatabaseURL(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		DatabaseURL string `yaml:"database_url"`
	}
	if err := yaml.Unmarshal(data, &c); err != nil || c.DatabaseURL == "" {
		t.Fatalf("%s: no database_url (%v)", path, err)
	}
	return c.DatabaseURL
}
