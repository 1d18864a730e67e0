package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServerWarnsOfAStage0SecretOthersRead: compat.stage0.jwt_secret
// signs a stage0 token of any roles (stage0's admin among them) for
// whoever reads it, as auth.jwt.secret does a native one: a config file
// every local user may read that holds it is named at start with the
// key, never the value; 0600 is not.
func TestServerWarnsOfAStage0SecretOthersRead(t *testing.T) {
	const secret = "Sec4etStage0Sec4etStage0Sec4etStage0"
	file := filepath.Join(t.TempDir(), "orderly.yaml")
	if err := os.WriteFile(file, []byte("compat:\n  stage0:\n    jwt_secret: "+secret+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := func() string {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		var out bytes.Buffer
		_ = run(ctx, []string{"orderly", "api", "--config", file, "--listen", "127.0.0.1:0",
			"--database-url", "postgres://orderly@127.0.0.1:1/orderly"}, nil, strings.NewReader(""), &out, &out)
		if strings.Contains(out.String(), secret) {
			t.Errorf("the secret reached the log:\n%s", out.String())
		}
		return out.String()
	}
	if out := start(); !strings.Contains(out, "the config file holds secrets and every local user may read it") ||
		!strings.Contains(out, "compat.stage0.jwt_secret") {
		t.Errorf("a 0644 config file with stage0's secret: no warning naming it:\n%s", out)
	}
	if err := os.Chmod(file, 0o600); err != nil {
		t.Fatal(err)
	}
	if out := start(); strings.Contains(out, "the config file holds secrets") {
		t.Errorf("a 0600 config file was warned of:\n%s", out)
	}
}
