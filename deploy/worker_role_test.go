package deploy

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/jackc/pgpassfile"
	"github.com/jackc/pgx/v5"
	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/orderly-run/orderly/internal/pgembed"
	"github.com/orderly-run/orderly/internal/testenv"
)

// roleSQL is the file the deployments run after `orderly migrate up` to
// make the workers' role and login.
const roleSQL = "postgres/worker-role.sql"

// TestWorkerRoleSQLIsTheDocs: the grants deploy/postgres/worker-role.sql
// applies are docs/sql.md's worker role block, statement for statement
// (comments aside, and its CREATE ROLE, which the file makes conditional).
// A change to the block that is not copied there fails here.
func TestWorkerRoleSQLIsTheDocs(t *testing.T) {
	doc, err := os.ReadFile("../docs/sql.md")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```sql\n(.*?)```").FindAllStringSubmatch(string(doc), -1) {
		if strings.Contains(m[1], "CREATE ROLE orderly_worker NOLOGIN") {
			blocks = append(blocks, m[1])
		}
	}
	if len(blocks) != 1 {
		t.Fatalf("docs/sql.md: %d worker role blocks, want 1", len(blocks))
	}
	file, err := os.ReadFile(roleSQL)
	if err != nil {
		t.Fatal(err)
	}
	_, copied, ok := strings.Cut(string(file), "-- docs/sql.md, \"A role for workers\", from here:\n")
	copied, _, ok2 := strings.Cut(copied, "-- to here.\n")
	if !ok || !ok2 {
		t.Fatalf("%s: no docs/sql.md markers", roleSQL)
	}
	statements := func(s string) string {
		var out []string
		for _, l := range strings.Split(s, "\n") {
			if l != "" && !strings.HasPrefix(l, "--") && l != "CREATE ROLE orderly_worker NOLOGIN;" {
				out = append(out, l)
			}
		}
		return strings.Join(out, "\n")
	}
	if got, want := statements(copied), statements(blocks[0]); got != want {
		t.Errorf("%s differs from docs/sql.md's worker role block; copy the block there.\n--- %s:\n%s\n--- docs/sql.md:\n%s", roleSQL, roleSQL, got, want)
	}
}

// TestComposeWorkerRole: docker-compose.yaml's workers log in to
// PostgreSQL as a login of their own, never with orderly's pgpass, and the
// worker-role service that makes that login, run here for real with its
// files where compose mounts them, lets them connect.
func TestComposeWorkerRole(t *testing.T) {
	p, err := loadCompose(t, "../docker-compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	step, ok := p.Services["worker-role"]
	if !ok {
		t.Fatal("no service worker-role")
	}
	if dep, ok := step.DependsOn["migrate"]; !ok || dep.Condition != types.ServiceConditionCompletedSuccessfully {
		t.Error("worker-role does not wait for the migrations to complete")
	}
	secretPath := func(s types.ServiceSecretConfig) string {
		if filepath.IsAbs(s.Target) {
			return s.Target
		}
		if s.Target != "" {
			return "/run/secrets/" + s.Target
		}
		return "/run/secrets/" + s.Source
	}
	var workers []string
	for name, s := range p.Services {
		if s.Image != "orderly-worker:latest" {
			continue
		}
		workers = append(workers, name)
		if slices.ContainsFunc(s.Secrets, func(sec types.ServiceSecretConfig) bool { return sec.Source == "pgpass" }) {
			t.Errorf("%s: has orderly's own pgpass", name)
		}
		if f := s.Environment["PGPASSFILE"]; f == nil || !slices.ContainsFunc(s.Secrets, func(sec types.ServiceSecretConfig) bool {
			return sec.Source == "worker.pgpass" && secretPath(sec) == *f
		}) {
			t.Errorf("%s: PGPASSFILE is not the worker.pgpass secret", name)
		}
		if s.Environment["ORDERLY_DATABASE_URL"] != nil {
			t.Errorf("%s: ORDERLY_DATABASE_URL overrides the config's login", name)
		}
		if dep, ok := s.DependsOn["worker-role"]; !ok || dep.Condition != types.ServiceConditionCompletedSuccessfully {
			t.Errorf("%s: does not wait for its PostgreSQL login", name)
		}
		if len(s.Configs) != 1 || s.Configs[0].Source != "worker.yaml" {
			t.Errorf("%s: configs %v, want worker.yaml", name, s.Configs)
		}
	}
	if len(workers) == 0 {
		t.Fatal("no worker services")
	}

	// Where the step's files are in its container, and where here.
	secrets := makeSecrets(t)
	repoSecrets, err := filepath.Abs("compose/secrets")
	if err != nil {
		t.Fatal(err)
	}
	local := func(f string) string {
		abs, err := filepath.Abs(f)
		if err != nil {
			t.Fatal(err)
		}
		if rest, ok := strings.CutPrefix(abs, repoSecrets+"/"); ok {
			return filepath.Join(secrets, rest)
		}
		return abs
	}
	files := map[string]string{}
	for _, s := range step.Secrets {
		files[secretPath(s)] = local(p.Secrets[s.Source].File)
	}
	for _, c := range step.Configs {
		files[c.Target] = local(p.Configs[c.Source].File)
	}
	env := map[string]string{}
	for k, v := range step.Environment {
		if v != nil {
			env[k] = *v
		}
	}
	workerPgpass := local(p.Secrets["worker.pgpass"].File)
	workerConfig := local(p.Configs["worker.yaml"].File)
	dbURL := readDatabaseURL(t, workerConfig)

	migrate := p.Services["migrate"].Command
	if len(migrate) < 4 || migrate[2] != "--database-url" {
		t.Fatalf("migrate runs %q, want migrate up --database-url …", migrate)
	}
	dsn := testenv.Postgres(t)
	login := runRoleStep(t, dsn, step.Command, env, files, migrate[3])
	dropRolesAtEnd(t, dsn, login)
	checkWorkerLogin(t, dsn, login, dbURL, workerPgpass)

	// Again, as on the next `docker compose up`, with a new password.
	rotatePassword(t, secrets)
	runRoleStep(t, dsn, step.Command, env, files, "")
	checkWorkerLogin(t, dsn, login, dbURL, workerPgpass)
}

// TestK8sWorkerRole: deploy/k8s's workers log in to PostgreSQL as a login
// of their own, never with orderly's Secret; the migrate Job makes that login after the migrations,
// and its role container, run here for real with its files where its
// volumes put them (from the Secrets README.md makes), lets them connect.
func TestK8sWorkerRole(t *testing.T) {
	var job *batchv1.Job
	var ds *appsv1.DaemonSet
	var workerYAML string
	for _, o := range loadK8s(t) {
		switch v := o.obj.(type) {
		case *batchv1.Job:
			job = v
		case *appsv1.DaemonSet:
			ds = v
		case *corev1.ConfigMap:
			if s, ok := v.Data["worker.yaml"]; ok && v.Name == "orderly-worker" {
				workerYAML = s
			}
		}
	}
	if job == nil || ds == nil || workerYAML == "" {
		t.Fatal("deploy/k8s: no migrate Job, worker DaemonSet or worker config")
	}
	pod := ds.Spec.Template.Spec
	for _, v := range pod.Volumes {
		if v.Secret != nil && v.Secret.SecretName == "orderly-postgres" {
			t.Errorf("worker DaemonSet: volume %s is orderly's own pgpass", v.Name)
		}
	}
	for _, c := range slices.Concat(pod.InitContainers, pod.Containers) {
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil {
				t.Errorf("worker DaemonSet: container %s takes its environment from a Secret", c.Name)
			}
		}
		if slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "ORDERLY_DATABASE_URL" }) {
			t.Errorf("worker DaemonSet: container %s: ORDERLY_DATABASE_URL overrides the config's login", c.Name)
		}
	}
	worker := pod.Containers[0]
	i := slices.IndexFunc(worker.Env, func(e corev1.EnvVar) bool { return e.Name == "PGPASSFILE" })
	if i < 0 {
		t.Fatal("worker DaemonSet: no PGPASSFILE")
	}
	readme := readmeObjects(t)
	workerFiles := mountedFiles(t, pod, worker, readme)
	workerPgpass, ok := workerFiles[worker.Env[i].Value]
	if !ok || !strings.HasSuffix(workerPgpass, "/worker.pgpass") {
		t.Fatalf("worker DaemonSet: PGPASSFILE %s is not the workers' pgpass (mounted: %v)", worker.Env[i].Value, workerFiles)
	}

	jp := job.Spec.Template.Spec
	if len(jp.InitContainers) != 1 || len(jp.Containers) != 1 {
		t.Fatalf("migrate Job: %d init containers and %d containers, want the migrations, then the role step", len(jp.InitContainers), len(jp.Containers))
	}
	migrate, step := jp.InitContainers[0], jp.Containers[0]
	if len(migrate.Args) < 4 || migrate.Args[0] != "migrate" || migrate.Args[1] != "up" || migrate.Args[2] != "--database-url" {
		t.Fatalf("migrate Job: the init container runs %q, want migrate up --database-url …", migrate.Args)
	}
	env := map[string]string{}
	for _, e := range step.Env {
		env[e.Name] = e.Value
	}
	secrets := makeSecrets(t)
	files := map[string]string{}
	for in, here := range mountedFiles(t, jp, step, readme) {
		if rest, ok := strings.CutPrefix(here, "deploy/compose/secrets/"); ok {
			here = filepath.Join(secrets, rest)
		} else {
			here = strings.TrimPrefix(here, "deploy/")
		}
		files[in] = here
	}
	workerPgpass = filepath.Join(secrets, strings.TrimPrefix(workerPgpass, "deploy/compose/secrets/"))
	cfg := filepath.Join(t.TempDir(), "worker.yaml")
	if err := os.WriteFile(cfg, []byte(workerYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	dbURL := readDatabaseURL(t, cfg)

	dsn := testenv.Postgres(t)
	login := runRoleStep(t, dsn, slices.Concat(step.Command, step.Args), env, files, migrate.Args[3])
	dropRolesAtEnd(t, dsn, login)
	checkWorkerLogin(t, dsn, login, dbURL, workerPgpass)
	rotatePassword(t, secrets)
	runRoleStep(t, dsn, slices.Concat(step.Command, step.Args), env, files, "")
	checkWorkerLogin(t, dsn, login, dbURL, workerPgpass)
}

// readmeObjects returns the files each `kubectl create secret|configmap
// NAME --from-file=KEY=PATH` of deploy/k8s/README.md puts in the Secret or
// ConfigMap: name → key → path from the repository's root.
func readmeObjects(t *testing.T) map[string]map[string]string {
	t.Helper()
	data, err := os.ReadFile("k8s/README.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]string{}
	for _, m := range regexp.MustCompile(`kubectl -n orderly create (?:secret generic|configmap) (\S+)((?: --from-file=\S+=\S+)+)`).FindAllStringSubmatch(string(data), -1) {
		out[m[1]] = map[string]string{}
		for _, f := range strings.Fields(m[2]) {
			k, v, _ := strings.Cut(strings.TrimPrefix(f, "--from-file="), "=")
			out[m[1]][k] = v
		}
	}
	return out
}

// mountedFiles returns the files of c's Secret and ConfigMap volumes
// that README.md makes: path in the container → path from the
// repository's root.
func mountedFiles(t *testing.T, pod corev1.PodSpec, c corev1.Container, objects map[string]map[string]string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, m := range c.VolumeMounts {
		i := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 {
			t.Fatalf("container %s mounts %s, which is no volume", c.Name, m.Name)
		}
		var name string
		var items []corev1.KeyToPath
		switch v := pod.Volumes[i]; {
		case v.Secret != nil:
			name, items = v.Secret.SecretName, v.Secret.Items
		case v.ConfigMap != nil:
			name, items = v.ConfigMap.Name, v.ConfigMap.Items
		default:
			continue
		}
		keys, ok := objects[name]
		if !ok {
			continue // a manifest's own, as the workers' config
		}
		if items == nil {
			for k := range keys {
				items = append(items, corev1.KeyToPath{Key: k, Path: k})
			}
		}
		for _, it := range items {
			f, ok := keys[it.Key]
			if !ok {
				t.Fatalf("container %s mounts key %s of %s, which README.md does not put there", c.Name, it.Key, name)
			}
			out[m.MountPath+"/"+it.Path] = f
		}
	}
	return out
}

// makeSecrets runs deploy/compose/secrets.sh in a copy of its directory,
// with a stand-in for `nk`, and returns the secrets directory it made.
func makeSecrets(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"compose/secrets.sh", "compose/api.yaml", "nats/auth.conf"} {
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
	bin := filepath.Join(dir, "bin")
	nk := "#!/bin/sh\ncase $1 in -gen) echo SUATESTSEED;; *) echo UATESTPUBLICKEY;; esac\n"
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "nk"), []byte(nk), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(dir, "compose/secrets.sh"))
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("secrets.sh: %v\n%s", err, out)
	}
	return filepath.Join(dir, "compose/secrets")
}

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
	cmd := exec.Command(filepath.Join(secrets, "../secrets.sh"))
	cmd.Env = append(os.Environ(), "PATH="+filepath.Join(secrets, "../../bin")+":"+os.Getenv("PATH"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("secrets.sh: %v\n%s", err, out)
	}
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
	if len(argv) == 0 || argv[0] != "psql" {
		t.Fatalf("the role step runs %q, want psql", argv)
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
	args := slices.Clone(argv[1:])
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
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "psql"), args...)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(e string) bool { return strings.HasPrefix(e, "PG") })
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+r.Replace(v))
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("the role step: %v\n%s", err, stderr.String())
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
