package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/config"
)

// TestComposeOrderlyConfigs loads the orderly configs docker-compose.yaml
// mounts with orderly's own loader, as the containers would: the API's
// template with a token hash filled in (secrets.sh), the worker's with
// the environment its services set.
func TestComposeOrderlyConfigs(t *testing.T) {
	tmpl, err := os.ReadFile("compose/api.yaml")
	if err != nil {
		t.Fatal(err)
	}
	api := filepath.Join(t.TempDir(), "api.yaml")
	data := strings.Replace(string(tmpl), "@ADMIN_TOKEN_SHA256@", strings.Repeat("ab", 32), 1)
	if err := os.WriteFile(api, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		path string
		env  []string
	}{
		{api, nil},
		{"compose/worker.yaml", []string{"ORDERLY_HOST=web-1", "ORDERLY_NATS__NKEY=/run/secrets/nats_worker_web-1.nk"}},
	}
	for _, c := range cases {
		cfg, _, err := config.Load(c.path, c.env, nil)
		if err != nil {
			t.Errorf("%s: %v", c.path, err)
			continue
		}
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s: %v", c.path, err)
		}
		if cfg.NATS.Replicas != 3 {
			t.Errorf("%s: nats.replicas %d, want 3", c.path, cfg.NATS.Replicas)
		}
	}
}
