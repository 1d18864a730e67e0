package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/config"
)

// TestConvertVigridMapping checks what the import writes for settings the
// end-to-end tests do not exercise: Vigrid's default-deny with no allow
// list, forbidden_chars as a string or absent, TLS, a deny pattern RE2
// cannot compile (refused) and an allow pattern (dropped with a note). The
// output always loads and validates as an orderly config.
func TestConvertVigridMapping(t *testing.T) {
	src := `
port: 9090
ssl: {enabled: true, certificate: /etc/v/c.pem, private_key: /etc/v/k.pem}
forbidden_chars: ";|"
log_level: CRITICAL
tokens:
  admin:
    secret: "s3cret-admin-value"
    user: root
    allow_commands: ["^ls", "^(?=x)"]
    deny_commands: ["^rm"]
  broken:
    user: root
`
	out, notes, err := convertVigrid([]byte(src), "v.conf", "web-3")
	if err != nil {
		t.Fatal(err)
	}
	text := string(out)
	for _, want := range []string{"listen: 0.0.0.0:9090", "tls_cert: /etc/v/c.pem", "tls_key: /etc/v/k.pem", "forbidden_chars: ;|",
		"- 0.0.0.0/0", "- ::/0", "level: error", "host: web-3", "sha256: "} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "s3cret-admin-value") || strings.Contains(strings.Join(notes, "\n"), "s3cret") {
		t.Fatal("the secret was printed")
	}
	for _, want := range []string{`token "broken" has no secret`, `allow pattern "^(?=x)"`, "acl.allow is empty",
		"limits.default_timeout is 24h"} {
		if !strings.Contains(strings.Join(notes, "\n"), want) {
			t.Errorf("notes lack %q: %q", want, notes)
		}
	}
	path := filepath.Join(t.TempDir(), "orderly.yaml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(path, nil, nil)
	if err != nil {
		t.Fatalf("the output does not load: %v\n%s", err, text)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the output does not validate: %v\n%s", err, text)
	}
	if !cfg.Compat.Vigrid.Enabled || cfg.Worker.ForbiddenChars != ";|" || len(cfg.Policy) != 1 || cfg.Policy[0].Deny[0] != "^rm" ||
		cfg.Limits.DefaultTimeout != 24*time.Hour {
		t.Fatalf("config = %+v", cfg)
	}

	if _, _, err := convertVigrid([]byte("tokens: {a: {secret: x, deny_commands: ['^(?!ls)']}}\n"), "v.conf", "h"); err == nil {
		t.Fatal("a deny pattern Go cannot compile was dropped instead of refused")
	}
	out, _, err = convertVigrid([]byte("tokens: {a: {secret: x, allow_commands: ['.*']}}\n"), "v.conf", "h")
	if err != nil || !strings.Contains(string(out), `forbidden_chars: '"'';\|&(){}$`+"`'") {
		t.Fatalf("default forbidden_chars: %v\n%s", err, out)
	}
	// Neither bind nor port: Vigrid listened on its defaults, where its
	// clients still call.
	if !strings.Contains(string(out), "listen: 0.0.0.0:8443\n") {
		t.Fatalf("default listen:\n%s", out)
	}
}

// TestConvertVigridTLSFilesMissing: Vigrid served plain HTTP when its
// certificate files were missing (its documentation's example paths,
// /path/to/server.crt); the imported config makes serve refuse to start,
// so the import says so when it cannot read them, and serve refuses
// before it starts anything.
func TestConvertVigridTLSFilesMissing(t *testing.T) {
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	src := func() []byte {
		return []byte("bind: 127.0.0.1\nport: 9090\nssl: {enabled: true, certificate: " + crt + ", private_key: " + key +
			"}\ntokens: {ops: {secret: ops-secret-value-123, user: root, allow_commands: ['.*']}}\n")
	}
	out, notes, err := convertVigrid(src(), "v.conf", "web-3")
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(notes, "\n")
	for _, f := range []string{crt, key} {
		if !strings.Contains(joined, `ssl file "`+f+`" cannot be read here`) || !strings.Contains(joined, "fell back to plain HTTP") {
			t.Errorf("notes lack the missing %s: %q", f, notes)
		}
	}
	if !strings.Contains(string(out), "tls_cert: "+crt) {
		t.Errorf("TLS left out of the config:\n%s", out)
	}

	// serve refuses the pair before it starts anything.
	cfgFile := filepath.Join(dir, "orderly.yaml")
	if err := os.WriteFile(cfgFile, out, 0o600); err != nil {
		t.Fatal(err)
	}
	dataDir := serveDataDir(t, "orderly-tls-missing-")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var buf bytes.Buffer
	err = run(ctx, []string{"orderly", "serve", "--config", cfgFile, "--data-dir", dataDir, "--listen", "127.0.0.1:0"},
		[]string{"ORDERLY_NATS__LISTEN=127.0.0.1:0"}, strings.NewReader(""), &buf, &buf)
	if err == nil || !strings.Contains(err.Error(), "http.tls_cert and http.tls_key") {
		t.Fatalf("serve without its TLS files: %v\n%s", err, buf.String())
	}
	if entries, _ := os.ReadDir(dataDir); len(entries) != 0 {
		t.Errorf("serve started something before refusing the TLS files: %v", entries)
	}

	// Files that exist get no note.
	for _, f := range []string{crt, key} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, notes, err = convertVigrid(src(), "v.conf", "web-3"); err != nil || strings.Contains(strings.Join(notes, "\n"), "ssl file") {
		t.Fatalf("readable TLS files noted: %v %q", err, notes)
	}
}

// TestConvertVigridNotesPublishedSecrets: Vigrid's documentation's
// example config (secret "your-secret-token-here") and its installer's
// token (…-Change-Me) were carried over silently, so a newcomer who
// imported the example kept a secret anyone can read. The import notes
// them, never printing the secret, and keeps them (their clients work).
func TestConvertVigridNotesPublishedSecrets(t *testing.T) {
	src := "tokens:\n  ops:\n    secret: your-secret-token-here\n    allow_commands: ['.*']\n" +
		"  ci:\n    secret: CI-Token-CHANGE-ME-please\n    allow_commands: ['.*']\n" +
		"  good:\n    secret: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b\n    allow_commands: ['.*']\n"
	out, notes, err := convertVigrid([]byte(src), "v.conf", "web-3")
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(notes, "\n")
	for _, tn := range []string{"ops", "ci"} {
		if !strings.Contains(joined, `token "`+tn+`": its secret is an example from Vigrid's documentation`) {
			t.Errorf("notes lack token %s: %q", tn, notes)
		}
	}
	if strings.Contains(joined, `token "good"`) {
		t.Errorf("a secret of its own noted: %q", notes)
	}
	if strings.Contains(joined, "your-secret") || strings.Contains(joined, "CHANGE-ME-please") || strings.Contains(string(out), "your-secret") {
		t.Errorf("the secret was printed: %q\n%s", notes, out)
	}
	if strings.Count(string(out), "sha256: ") != 3 {
		t.Errorf("a token was left out:\n%s", out)
	}
}
