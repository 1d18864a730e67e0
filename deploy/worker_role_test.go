package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

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
