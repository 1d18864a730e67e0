package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/testenv"
)

// reloadFile is a config with every part of the security setup, in the
// order an operator might write it: the worker first, so that a file cut
// just before "auth:" keeps a valid worker section and loses the rest.
type reloadFile struct {
	bin, key, aliceSum string
	opsAllow           string // the ops rule's allow regex
	workerDeny         string // "" for none
}

func (f reloadFile) String() string {
	deny := "[]"
	if f.workerDeny != "" {
		deny = fmt.Sprintf("[%q]", f.workerDeny)
	}
	return fmt.Sprintf(`worker:
  command_path: [%q]
  deny: %s
auth:
  tokens:
    - name: alice
      sha256: %q
      roles: [ops]
  jwt:
    algorithm: RS256
    public_key: %q
    audience: orderly
    leeway: 5s
policy:
  - name: admin
    roles: [admin]
    hosts: ["*"]
    allow: [".*"]
    run_as: ["", "*"]
  - name: ops
    roles: [ops]
    hosts: ["*"]
    allow: [%q]
acl:
  allow: ["127.0.0.0/8"]
`, f.bin, deny, f.aliceSum, f.key, f.opsAllow)
}

// writeRSAPublicKey writes the PEM public key of a fresh RSA key of bits.
func writeRSAPublicKey(t *testing.T, path string, bits int) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return k
}

// reloadStatus is the config part of /v1/status.
type reloadStatus struct {
	SHA256Loaded    string `json:"sha256_loaded"`
	SHA256OnDisk    string `json:"sha256_on_disk"`
	Drift           bool   `json:"drift"`
	PendingError    string `json:"pending_error"`
	LastReloadError string `json:"last_reload_error"`
}

func (s *secStack) configStatus() reloadStatus {
	s.t.Helper()
	resp, b := s.send(call{method: "GET", path: "/v1/status", token: s.token})
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("status: %d %s", resp.StatusCode, b)
	}
	var st struct {
		Config reloadStatus `json:"config"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		s.t.Fatal(err)
	}
	return st.Config
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// TestReloadIsAllOrNothing replays issue 7's bad reloads against a running
// API and worker: a 1024-bit RS256 key, a missing key file, an empty file
// and a file truncated just before "auth:". Each is refused with a 4xx;
// the old tokens, JWT key, policy and worker policy keep working; the
// status keeps the old hash and reports the drift and the refusal; and
// reloading again refuses again instead of answering "changed: false".
// Then a good file applies to API and worker at once, and the truncated
// file applies only when confirmed by its hash.
func TestReloadIsAllOrNothing(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"hello", "bye"} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\necho "+name+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	key := writeRSAPublicKey(t, filepath.Join(dir, "jwt.pem"), 2048)
	writeRSAPublicKey(t, filepath.Join(dir, "weak.pem"), 1024)
	alice, aliceSum := auth.NewToken()

	v1 := reloadFile{bin: bin, key: filepath.Join(dir, "jwt.pem"), aliceSum: aliceSum, opsAllow: "^hello( |$)"}
	// v2 lets ops run bye instead of hello, and its worker refuses hello.
	v2 := v1
	v2.opsAllow, v2.workerDeny = "^bye( |$)", "^hello( |$)"
	s := newSecStack(t, v1.String(), map[string]any{"config_check_interval": "1h"}, "h1")
	loaded := s.configStatus().SHA256Loaded
	if loaded != sha256Hex(v1.String()) {
		t.Fatalf("loaded %s, want the hash of the file", loaded)
	}

	bob, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"sub": "bob", "roles": []string{"ops"},
		"aud": "orderly", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	submit := func(token, command string) (*http.Response, []byte) {
		return s.send(call{method: "POST", path: "/v1/orders?wait=20", token: token,
			body: map[string]any{"host": "h1", "command": command}})
	}
	reload := func(query string) (*http.Response, []byte) {
		return s.send(call{method: "POST", path: "/v1/admin/reload" + query, token: s.token})
	}
	// unchanged checks that v1 still rules every part of the process.
	unchanged := func(t *testing.T, onDisk string) {
		t.Helper()
		resp, b := submit(alice, "hello")
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"status":"succeeded"`) {
			t.Fatalf("alice's hello (old token, old policy, old worker policy): %d %s", resp.StatusCode, b)
		}
		resp, b = submit(alice, "bye")
		wantError(t, resp.StatusCode, b, http.StatusForbidden, "forbidden")
		if resp, b := s.send(call{method: "GET", path: "/v1/orders", token: bob}); resp.StatusCode != http.StatusOK {
			t.Fatalf("bob's JWT (old key): %d %s", resp.StatusCode, b)
		}
		st := s.configStatus()
		if st.SHA256Loaded != loaded || st.SHA256OnDisk != onDisk || st.Drift != (onDisk != loaded) || st.LastReloadError == "" {
			t.Fatalf("status after a refused reload is not honest: %+v", st)
		}
	}

	weak, missing := v2, v2
	weak.key = filepath.Join(dir, "weak.pem")
	missing.key = filepath.Join(dir, "missing.pem")
	truncated := v2.String()[:strings.Index(v2.String(), "auth:")]
	for _, c := range []struct {
		name, text, code, says string
	}{
		{"1024-bit RS256 key", weak.String(), "unprocessable", "1024 bits"},
		{"missing key file", missing.String(), "unprocessable", "missing.pem"},
		{"empty file", "", "config_empty", "sets nothing"},
		{"truncated before auth", truncated, "confirmation_required", "every principal"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s.writeConfig(c.text)
			for range 2 { // the second attempt is refused again, not "unchanged"
				resp, b := reload("")
				wantError(t, resp.StatusCode, b, http.StatusUnprocessableEntity, c.code)
				if !strings.Contains(string(b), c.says) {
					t.Fatalf("refusal does not say %q: %s", c.says, b)
				}
				unchanged(t, sha256Hex(c.text))
			}
		})
	}

	// The truncated file's refusal names what it removes and how to
	// confirm it; a wrong hash does not confirm it.
	s.writeConfig(truncated)
	resp, b := reload("")
	var refusal struct {
		Error struct {
			Details struct {
				SHA256   string         `json:"sha256"`
				Removals []string       `json:"removals"`
				Summary  config.Summary `json:"summary"`
			} `json:"details"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &refusal); err != nil {
		t.Fatal(err)
	}
	d := refusal.Error.Details
	if d.SHA256 != sha256Hex(truncated) || len(d.Removals) != 3 ||
		!slices.Equal(d.Summary.Principals.Removed, []string{"jwt", "token:alice"}) ||
		!slices.Equal(d.Summary.Rules.Removed, []string{"admin", "ops"}) ||
		!slices.Equal(d.Summary.ACL.Removed, []string{"allow 127.0.0.0/8"}) ||
		!slices.Equal(d.Summary.Worker.Added, []string{"worker.deny"}) {
		t.Fatalf("refusal details: %s", b)
	}
	resp, b = reload("?confirm=" + loaded)
	wantError(t, resp.StatusCode, b, http.StatusUnprocessableEntity, "confirmation_required")
	unchanged(t, sha256Hex(truncated))

	// A good file applies to the API and the worker together.
	s.writeConfig(v2.String())
	resp, b = reload("")
	var ok struct {
		Changed     bool           `json:"changed"`
		ChangedKeys []string       `json:"changed_keys"`
		Summary     config.Summary `json:"summary"`
		SHA256      string         `json:"sha256"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &ok) != nil || !ok.Changed ||
		!slices.Equal(ok.ChangedKeys, []string{"worker.deny", "policy"}) || ok.SHA256 != sha256Hex(v2.String()) ||
		!slices.Equal(ok.Summary.Rules.Changed, []string{"ops"}) {
		t.Fatalf("good reload: %d %s", resp.StatusCode, b)
	}
	if resp, b := submit(alice, "bye"); resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"status":"succeeded"`) {
		t.Fatalf("alice's bye under the new policy: %d %s", resp.StatusCode, b)
	}
	if resp, b := submit(s.token, "hello"); resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"status":"rejected"`) {
		t.Fatalf("hello under the new worker policy: %d %s", resp.StatusCode, b)
	}
	if st := s.configStatus(); st.SHA256Loaded != ok.SHA256 || st.Drift || st.LastReloadError != "" || st.PendingError != "" {
		t.Fatalf("status after the good reload: %+v", st)
	}

	// Confirmed by its hash, the truncated file applies: alice and bob
	// are gone, the built-in rule and the PostgreSQL admin token remain.
	s.writeConfig(truncated)
	resp, b = reload("?confirm=" + sha256Hex(truncated))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("confirmed reload: %d %s", resp.StatusCode, b)
	}
	resp, b = submit(alice, "bye")
	wantError(t, resp.StatusCode, b, http.StatusUnauthorized, "unauthenticated")
	resp, b = s.send(call{method: "GET", path: "/v1/orders", token: bob})
	wantError(t, resp.StatusCode, b, http.StatusUnauthorized, "unauthenticated")
	s.assertReady(nil)
}

// TestSIGHUPRefusesAndLogsLikeTheAPI sends a real SIGHUP to a process
// waiting in waitForSignals: a file that would remove every principal is
// refused without confirmation, the refusal is logged, and the running
// config stays.
func TestSIGHUPRefusesAndLogsLikeTheAPI(t *testing.T) {
	_, sum := auth.NewToken()
	path := filepath.Join(t.TempDir(), "orderly.yaml")
	secure := fmt.Sprintf("listen: 127.0.0.1:0\nauth:\n  tokens:\n    - name: alice\n      sha256: %q\n      roles: [ops]\n", sum)
	if err := os.WriteFile(path, []byte(secure), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := config.NewWatcher(path, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("listen: 127.0.0.1:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Our own registration keeps SIGHUP from killing the test binary
	// before waitForSignals has registered its own.
	guard := make(chan os.Signal, 16)
	signal.Notify(guard, syscall.SIGHUP)
	defer signal.Stop(guard)

	var logs testenv.LogBuffer
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	a := &app{}
	go func() { done <- a.waitForSignals(ctx, w, slog.New(slog.NewJSONHandler(&logs, nil)), nil, nil) }()
	waitUntil(t, 10*time.Second, "the SIGHUP refusal in the log", func() bool {
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		return strings.Contains(logs.String(), "every principal")
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var line map[string]any
	first, _, _ := strings.Cut(logs.String(), "\n")
	if err := json.Unmarshal([]byte(first), &line); err != nil || line["level"] != "ERROR" ||
		!strings.Contains(fmt.Sprint(line["error"]), "confirm=") {
		t.Fatalf("refusal log line: %s", first)
	}
	if len(w.Current().Auth.Tokens) != 1 || w.Status().LastReloadError == "" {
		t.Fatalf("SIGHUP applied the file: %+v", w.Status())
	}
}

// TestReloadCompatSurface: a compat surface keeps the prefix it was
// mounted at until a restart, and the reload says so (restart_required);
// a reload that turns a surface off stops it at once. Before, a moved
// prefix was half applied (mounted at the old one, stripped as the new)
// and a surface turned off kept running commands.
func TestReloadCompatSurface(t *testing.T) {
	s, _ := vigridStack(t, false, nil)
	c := newVigridClient(t, s)
	orig, err := os.ReadFile(s.path)
	if err != nil {
		t.Fatal(err)
	}
	vigrid := regexp.MustCompile(`(?m)^(  vigrid:\n(?:    .*\n)*?    )prefix: /api/v1$`)
	if !vigrid.Match(orig) {
		t.Fatalf("the imported config has no compat.vigrid.prefix /api/v1:\n%s", orig)
	}
	reload := func(text, want string) {
		t.Helper()
		s.writeConfig(text)
		resp, b := s.send(call{method: "POST", path: "/v1/admin/reload", token: s.token})
		var res struct {
			RestartRequired []string `json:"restart_required"`
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &res) != nil || !slices.Contains(res.RestartRequired, want) {
			t.Fatalf("reload: %d %s, want %s in restart_required", resp.StatusCode, b, want)
		}
	}
	echo := map[string]any{"command": "echo", "arguments": []string{"hi"}, "synchronous": true}
	reload(vigrid.ReplaceAllString(string(orig), "${1}prefix: /api/v2"), "compat.vigrid.prefix")
	if code, m, _ := c.call("POST", "/api/v1/execute", bearer("ops"), echo); code != http.StatusOK || fmt.Sprint(m["result"]) != fmt.Sprint(map[string]any{"dry_run": false, "return_code": 0, "stderr": "", "stdout": "hi\n"}) {
		t.Errorf("execute at the mounted prefix after the move: %d %v", code, m)
	}
	if code, _, _ := c.call("POST", "/api/v2/execute", bearer("ops"), echo); code != http.StatusNotFound {
		t.Errorf("execute at the new prefix before a restart: %d, want 404", code)
	}
	off := strings.Replace(string(orig), "  vigrid:\n", "  vigrid:\n    enabled: false\n", 1)
	off = strings.Replace(off, "    enabled: true\n", "", 1)
	reload(off, "compat.vigrid.enabled")
	if code, m, _ := c.call("POST", "/api/v1/execute", bearer("ops"), echo); code != http.StatusNotFound {
		t.Errorf("execute after the surface was turned off: %d %v, want 404", code, m)
	}
}

// TestDriftSaysActionsWouldBeRefused: an action that does not compile is
// refused by a reload (its part's preparer), and the drift check says so
// in advance in pending_error, as it does for any other invalid file.
// Before, /v1/status showed the drift with no pending error and the
// reload was then refused.
func TestDriftSaysActionsWouldBeRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "orderly.yaml")
	good := "listen: 127.0.0.1:0\nactions:\n  definitions:\n    - name: greet\n" +
		"      params: [{name: who, pattern: \"[a-z]{1,10}\"}]\n" +
		"      command: [echo, \"{who}\"]\n      roles: [ops]\n      hosts: [\"*\"]\n"
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := config.NewWatcher(path, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watchActions(w); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, from, to, want string }{
		{"bad pattern", `"[a-z]{1,10}"`, `"[a-z"`, "bad pattern"},
		{"unknown placeholder", `"{who}"`, `"{whom}"`, "{whom} is not a param"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(strings.Replace(good, c.from, c.to, 1)), 0o600); err != nil {
				t.Fatal(err)
			}
			if drift, _ := w.Check(); !drift {
				t.Fatal("no drift")
			}
			st := w.Status()
			if !strings.Contains(st.PendingError, "api actions") || !strings.Contains(st.PendingError, c.want) {
				t.Fatalf("pending_error %q does not say the actions would be refused (%s)", st.PendingError, c.want)
			}
			if _, err := w.Reload(); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Reload = %v; want refused for %s", err, c.want)
			}
		})
	}
}
