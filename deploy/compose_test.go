package deploy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// loadCompose loads a compose file with compose-go, the loader Docker
// Compose itself uses: the file is checked against the Compose
// specification's JSON schema, then interpolated and normalized.
func loadCompose(t *testing.T, path string) (*types.Project, error) {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{path},
		cli.WithWorkingDirectory(filepath.Dir(path)), cli.WithEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	return opts.LoadProject(context.Background())
}

// TestComposeFile checks docker-compose.yaml against the Compose
// specification and the promises docs/deploy.md makes about it.
func TestComposeFile(t *testing.T) {
	p, err := loadCompose(t, "../docker-compose.yaml")
	if err != nil {
		t.Fatalf("docker-compose.yaml: %v", err)
	}

	for _, name := range []string{"nats-1", "nats-2", "nats-3", "postgres", "migrate", "api-1", "api-2", "worker-web-1", "worker-web-2"} {
		if _, ok := p.Services[name]; !ok {
			t.Errorf("no service %s", name)
		}
	}
	for _, name := range []string{"api-1", "api-2"} {
		s := p.Services[name]
		if s.HealthCheck == nil || !strings.Contains(strings.Join(s.HealthCheck.Test, " "), "/readyz") {
			t.Errorf("%s: no healthcheck on /readyz", name)
		}
		if dep, ok := s.DependsOn["migrate"]; !ok || dep.Condition != types.ServiceConditionCompletedSuccessfully {
			t.Errorf("%s: does not wait for the migrations to complete", name)
		}
	}
	for _, name := range []string{"worker-web-1", "worker-web-2"} {
		if s := p.Services[name]; s.Init == nil || !*s.Init {
			t.Errorf("%s: no init as PID 1 to reap the orders' orphans", name)
		}
	}
	if got := p.Services["migrate"].Command; len(got) < 2 || got[0] != "migrate" || got[1] != "up" {
		t.Errorf("migrate runs %q, want migrate up", got)
	}
	if p.Services["postgres"].Environment["POSTGRES_PASSWORD"] != nil {
		t.Error("postgres: inline POSTGRES_PASSWORD; use POSTGRES_PASSWORD_FILE")
	}
	for _, s := range p.Services {
		for k, v := range s.Environment {
			if v != nil && strings.Contains(strings.ToUpper(k), "PASSWORD") && !strings.HasSuffix(k, "_FILE") {
				t.Errorf("%s: %s is set inline", s.Name, k)
			}
		}
	}
	if !slices.ContainsFunc(p.Services["postgres"].Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Type == types.VolumeTypeVolume && v.Source == "postgres"
	}) {
		t.Error("postgres: data is not on the named volume postgres")
	}
	for name, s := range p.Secrets {
		if s.File == "" {
			t.Errorf("secret %s does not come from a file", name)
		}
	}
	// Files the repository ships must exist; the secrets are made by
	// deploy/compose/secrets.sh and are not in the repository.
	for name, c := range p.Configs {
		if strings.Contains(c.File, "/secrets/") {
			continue
		}
		if _, err := os.Stat(c.File); err != nil {
			t.Errorf("config %s: %v", name, err)
		}
	}
	// nats-server 2.14 or later: orderly rewinds consumers with a reset
	// (the NATS intake's, and a host's taken again by the same worker),
	// an API older servers do not have.
	for _, name := range []string{"nats-1", "nats-2", "nats-3"} {
		var major, minor int
		if _, err := fmt.Sscanf(p.Services[name].Image, "nats:%d.%d", &major, &minor); err != nil || major < 2 || major == 2 && minor < 14 {
			t.Errorf("%s: image %s, want nats:2.14 or later", name, p.Services[name].Image)
		}
	}
	// The streams are at three replicas: the API's config asks for them.
	for _, f := range []string{"compose/api.yaml", "compose/worker.yaml"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), "replicas: 3") {
			t.Errorf("%s: nats.replicas is not 3", f)
		}
	}
}

// TestComposeFileTypo proves the check above would catch a typo: the same
// file with one key misspelled must be refused.
func TestComposeFileTypo(t *testing.T) {
	data, err := os.ReadFile("../docker-compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(data), "healthcheck:", "healthchek:", 1)
	if bad == string(data) {
		t.Fatal("no healthcheck key to misspell")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "docker-compose.yaml")
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadCompose(t, path); err == nil || !strings.Contains(err.Error(), "healthchek") {
		t.Fatalf("a misspelled key was not refused: %v", err)
	}
}
