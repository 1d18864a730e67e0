package main

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/testenv"
)

// rsaJWKS is a key set of the public halves of keys, under their kids.
func rsaJWKS(t *testing.T, keys map[string]*rsa.PrivateKey) []byte {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	var list []map[string]any
	for kid, k := range keys {
		list = append(list, map[string]any{"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
			"n": enc(k.N.Bytes()), "e": enc(big.NewInt(int64(k.E)).Bytes())})
	}
	b, err := json.Marshal(map[string]any{"keys": list})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestJWKSThroughTheAPI runs a key set behind a real TLS server against
// a running API: a key added by the provider verifies on first sight of
// its kid; a reload while the provider is down keeps the set (it is not
// fetched again); a failed refresh keeps it too and is counted in
// /metrics; a reload that changes the key set settings while the
// provider is down is refused and changes nothing.
func TestJWKSThroughTheAPI(t *testing.T) {
	keyA, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyB, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var doc atomic.Pointer[[]byte]
	var down atomic.Bool
	var hits atomic.Int64
	setDoc := func(b []byte) { doc.Store(&b) }
	setDoc(rsaJWKS(t, map[string]*rsa.PrivateKey{"a": keyA}))
	idp := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if down.Load() {
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
			return
		}
		w.Write(*doc.Load())
	}))
	defer idp.Close()
	dir := t.TempDir()
	caFile := filepath.Join(dir, "idp-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: idp.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	file := func(timeout string) string {
		return fmt.Sprintf(`auth:
  jwt:
    audience: orderly
    jwks:
      url: %q
      ca_file: %q
      refresh: 1h
      min_refresh: 1s
      timeout: %s
policy:
  - name: admin
    roles: [admin]
    hosts: ["*"]
    allow: [".*"]
    run_as: ["", "*"]
  - name: ops
    roles: [ops]
    hosts: ["*"]
    allow: ["^true$"]
acl:
  allow: ["127.0.0.0/8"]
`, idp.URL, caFile, timeout)
	}
	s := newSecStack(t, file("2s"), map[string]any{"config_check_interval": "1h"})
	token := func(key *rsa.PrivateKey, kid string) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"sub": "carol", "roles": []string{"ops"},
			"aud": "orderly", "exp": time.Now().Add(time.Hour).Unix()})
		tok.Header["kid"] = kid
		sig, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	list := func(tok string) (int, string) {
		resp, b := s.send(call{method: "GET", path: "/v1/orders", token: tok})
		return resp.StatusCode, string(b)
	}
	reload := func() (int, string) {
		resp, b := s.send(call{method: "POST", path: "/v1/admin/reload", token: s.token})
		return resp.StatusCode, string(b)
	}
	tokA, tokB := token(keyA, "a"), token(keyB, "b")
	if code, b := list(tokA); code != http.StatusOK {
		t.Fatalf("a token of the published key: %d %s", code, b)
	}
	// The provider rotates: the new key is fetched for its kid.
	setDoc(rsaJWKS(t, map[string]*rsa.PrivateKey{"a": keyA, "b": keyB}))
	// Refused within min_refresh of the read at load, then fetched.
	testenv.WaitUntil(t, 10*time.Second, "a token of the key the provider added", func() bool {
		code, _ := list(tokB)
		return code == http.StatusOK
	})
	before := hits.Load()

	// The provider goes down. A reload with the same key set settings
	// keeps the set: no fetch, no refusal.
	down.Store(true)
	if code, b := reload(); code != http.StatusOK {
		t.Fatalf("a reload while the provider is down, key set unchanged: %d %s", code, b)
	}
	if n := hits.Load(); n != before {
		t.Errorf("the reload fetched the key set again (%d fetches, had %d)", n, before)
	}
	for name, tok := range map[string]string{"a": tokA, "b": tokB} {
		if code, b := list(tok); code != http.StatusOK {
			t.Errorf("key %s after the reload: %d %s", name, code, b)
		}
	}
	// A made-up kid triggers a refresh, which fails: refused, the set
	// kept, the failure counted.
	madeUp := token(keyB, "made-up")
	testenv.WaitUntil(t, 10*time.Second, "a failed refresh for a made-up kid, counted", func() bool {
		if code, b := list(madeUp); code != http.StatusUnauthorized || !strings.Contains(b, "kid") {
			t.Fatalf("a made-up kid: %d %s, want 401 naming the kid", code, b)
		}
		_, m := s.do("GET", "/metrics", nil)
		return strings.Contains(string(m), `orderly_jwks_refreshes_total{result="failed"} 1`)
	})
	if code, b := list(tokB); code != http.StatusOK {
		t.Errorf("key b after a failed refresh: %d %s", code, b)
	}
	_, b := s.do("GET", "/v1/status", nil)
	var st struct {
		JWKS *auth.JWKSStatus `json:"jwks"`
	}
	if err := json.Unmarshal(b, &st); err != nil || st.JWKS == nil || len(st.JWKS.Keys) != 2 ||
		!strings.Contains(st.JWKS.LastError, "503") || st.JWKS.Source != idp.URL {
		t.Errorf("/v1/status after a failed refresh: %s, want both keys and the 503", b)
	}

	// New key set settings are read at load: with the provider down, the
	// reload is refused and the set in use stays.
	s.writeConfig(file("3s"))
	if code, b := reload(); code != http.StatusUnprocessableEntity || !strings.Contains(b, "503") {
		t.Errorf("a reload changing the key set while the provider is down: %d %s, want 422 naming the 503", code, b)
	}
	if code, b := list(tokA); code != http.StatusOK {
		t.Errorf("key a after the refused reload: %d %s", code, b)
	}
	down.Store(false)
	if code, b := reload(); code != http.StatusOK {
		t.Fatalf("the same reload with the provider back: %d %s", code, b)
	}
	if code, b := list(tokA); code != http.StatusOK {
		t.Errorf("key a after the reload: %d %s", code, b)
	}
}
