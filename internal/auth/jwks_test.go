package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/orderly-run/orderly/internal/config"
)

// testClock is a clock tests move; the key set's refreshes read it from
// their own goroutine.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// jwkJSON is the public half of key as a JWK with kid (none when "") and
// alg (none when "").
func jwkJSON(t *testing.T, kid, alg string, key crypto.Signer) map[string]any {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	m := map[string]any{"use": "sig"}
	switch pub := key.Public().(type) {
	case *rsa.PublicKey:
		m["kty"], m["n"], m["e"] = "RSA", enc(pub.N.Bytes()), enc(big.NewInt(int64(pub.E)).Bytes())
	case *ecdsa.PublicKey:
		b, err := pub.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		size := (len(b) - 1) / 2
		m["kty"], m["crv"], m["x"], m["y"] = "EC", pub.Curve.Params().Name, enc(b[1:1+size]), enc(b[1+size:])
	case ed25519.PublicKey:
		m["kty"], m["crv"], m["x"] = "OKP", "Ed25519", enc(pub)
	default:
		t.Fatalf("no JWK for %T", pub)
	}
	if kid != "" {
		m["kid"] = kid
	}
	if alg != "" {
		m["alg"] = alg
	}
	return m
}

func jwksDoc(t *testing.T, keys ...map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signKid signs the test claims with m and key, naming kid ("" for none).
func signKid(t *testing.T, m jwt.SigningMethod, key any, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims(nil))
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", m.Alg(), err)
	}
	return "Bearer " + s
}

// signKid2 signs an RS256 token whose header has kid, even an empty one.
func signKid2(t *testing.T, key any, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims(nil))
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return "Bearer " + s
}

// idp is an identity provider's JWKS endpoint on loopback, over TLS with
// a certificate of its own CA (in caFile).
type idp struct {
	srv    *httptest.Server
	caFile string
	doc    atomic.Pointer[[]byte]
	fail   atomic.Bool
	hang   chan struct{} // while open and hanging, requests wait for it
	hangOn atomic.Bool
	hits   atomic.Int64
}

func newIDP(t *testing.T, doc []byte) *idp {
	t.Helper()
	p := &idp{hang: make(chan struct{})}
	p.doc.Store(&doc)
	p.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.hits.Add(1)
		if p.hangOn.Load() {
			select {
			case <-p.hang:
			case <-r.Context().Done():
			}
			return
		}
		if p.fail.Load() {
			http.Error(w, "down for maintenance", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Write(*p.doc.Load())
	}))
	t.Cleanup(func() { close(p.hang); p.srv.Close() })
	p.caFile = filepath.Join(t.TempDir(), "ca.pem")
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw})
	if err := os.WriteFile(p.caFile, ca, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *idp) set(doc []byte) { p.doc.Store(&doc) }

// jwksConfig is a JWKS config for the test claims (claims()).
func jwksConfig(k config.JWKS) config.Auth {
	if k.Refresh == 0 {
		k.Refresh = 5 * time.Minute
	}
	if k.MinRefresh == 0 {
		k.MinRefresh = 30 * time.Second
	}
	if k.Timeout == 0 {
		k.Timeout = 2 * time.Second
	}
	return config.Auth{JWT: config.JWT{Issuer: "https://idp.example", Audience: "orderly", Leeway: 30 * time.Second,
		MaxLifetime: 24 * time.Hour, RolesClaim: "roles", NameClaim: "sub", JWKS: k}}
}

type testKeys struct {
	rsa, rsa2, ps *rsa.PrivateKey
	ec            *ecdsa.PrivateKey
	ed            ed25519.PrivateKey
}

func newTestKeys(t *testing.T) testKeys {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testKeys{rsa: rsaKey(t, 2048), rsa2: rsaKey(t, 2048), ps: rsaKey(t, 2048), ec: ec, ed: ed}
}

func mustAccept(t *testing.T, a *Authenticator, what, header string) {
	t.Helper()
	p, err := a.Authenticate(header)
	if err != nil || p.Name != "jwt:alice" || p.Kind != KindJWT {
		t.Errorf("%s: %+v, %v; want jwt:alice", what, p, err)
	}
}

func mustRefuse(t *testing.T, a *Authenticator, what, header, msg string) {
	t.Helper()
	_, err := a.Authenticate(header)
	if err == nil {
		t.Errorf("%s: accepted", what)
		return
	}
	wantUnauthenticated(t, err, header)
	if msg != "" && !strings.Contains(err.Error(), msg) {
		t.Errorf("%s: %v, want %q in it", what, err, msg)
	}
}

func TestJWKSEveryKeyVerifiesItsOwnTokens(t *testing.T) {
	k := newTestKeys(t)
	p := newIDP(t, jwksDoc(t,
		jwkJSON(t, "rsa-1", "RS256", k.rsa),
		jwkJSON(t, "ps-1", "PS256", k.ps),
		jwkJSON(t, "ec-1", "", k.ec),
		jwkJSON(t, "ed-1", "EdDSA", k.ed),
	))
	var refreshes atomic.Int64
	a, err := NewWith(jwksConfig(config.JWKS{URL: p.srv.URL, CAFile: p.caFile}), Options{Now: testNow, OnJWKSRefresh: func(error) { refreshes.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	mustAccept(t, a, "RS256 by kid", signKid(t, jwt.SigningMethodRS256, k.rsa, "rsa-1"))
	mustAccept(t, a, "PS256 by kid", signKid(t, jwt.SigningMethodPS256, k.ps, "ps-1"))
	mustAccept(t, a, "ES256 by kid (alg from the curve)", signKid(t, jwt.SigningMethodES256, k.ec, "ec-1"))
	mustAccept(t, a, "EdDSA by kid", signKid(t, jwt.SigningMethodEdDSA, k.ed, "ed-1"))
	// Without a kid, the one key of the token's algorithm.
	mustAccept(t, a, "ES256 without kid", signKid(t, jwt.SigningMethodES256, k.ec, ""))
	if n := p.hits.Load(); n != 1 {
		t.Errorf("the set was fetched %d times, want once (at load)", n)
	}

	// Two RSA keys of one algorithm: a token without kid is not guessed.
	p.set(jwksDoc(t, jwkJSON(t, "rsa-1", "RS256", k.rsa), jwkJSON(t, "rsa-2", "RS256", k.rsa2)))
	b, err := NewWith(jwksConfig(config.JWKS{URL: p.srv.URL, CAFile: p.caFile}), Options{Now: testNow})
	if err != nil {
		t.Fatal(err)
	}
	mustAccept(t, b, "the second RSA key by kid", signKid(t, jwt.SigningMethodRS256, k.rsa2, "rsa-2"))
	mustRefuse(t, b, "RS256 without kid, two RS256 keys", signKid(t, jwt.SigningMethodRS256, k.rsa2, ""), "several keys")
	mustRefuse(t, b, "a key's token under the other's kid", signKid(t, jwt.SigningMethodRS256, k.rsa2, "rsa-1"), "invalid token")
	// The claims are judged as for a single key.
	exp := jwt.NewWithClaims(jwt.SigningMethodRS256, claims(map[string]any{"exp": testNow().Add(-time.Hour).Unix()}))
	exp.Header["kid"] = "rsa-1"
	s, _ := exp.SignedString(k.rsa)
	mustRefuse(t, b, "expired", "Bearer "+s, "expired")
	aud := jwt.NewWithClaims(jwt.SigningMethodRS256, claims(map[string]any{"aud": "another-service"}))
	aud.Header["kid"] = "rsa-1"
	s, _ = aud.SignedString(k.rsa)
	mustRefuse(t, b, "another audience", "Bearer "+s, "audience")
	if refreshes.Load() != 0 {
		t.Errorf("%d refreshes without a reason", refreshes.Load())
	}
}

func TestJWKSUnknownKidIsFetchedAfterARotation(t *testing.T) {
	k := newTestKeys(t)
	p := newIDP(t, jwksDoc(t, jwkJSON(t, "2026-11", "RS256", k.rsa)))
	clock := &testClock{t: testNow()}
	a, err := NewWith(jwksConfig(config.JWKS{URL: p.srv.URL, CAFile: p.caFile}), Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	mustAccept(t, a, "the first key", signKid(t, jwt.SigningMethodRS256, k.rsa, "2026-11"))

	// The issuer publishes a new key and signs with it.
	p.set(jwksDoc(t, jwkJSON(t, "2026-11", "RS256", k.rsa), jwkJSON(t, "2026-12", "RS256", k.rsa2)))
	newTok := signKid(t, jwt.SigningMethodRS256, k.rsa2, "2026-12")
	// Within min_refresh of the last read, an unknown kid reads nothing.
	mustRefuse(t, a, "a new kid within min_refresh", newTok, "kid")
	if n := p.hits.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1: an unknown kid within min_refresh must not fetch", n)
	}
	clock.Add(31 * time.Second)
	mustAccept(t, a, "the new key, fetched for its kid", newTok)
	mustAccept(t, a, "the first key, still published", signKid(t, jwt.SigningMethodRS256, k.rsa, "2026-11"))
	if n := p.hits.Load(); n != 2 {
		t.Errorf("%d fetches, want 2", n)
	}
	// Made-up kids cost at most one fetch per min_refresh.
	for i := range 20 {
		mustRefuse(t, a, "a made-up kid", signKid(t, jwt.SigningMethodRS256, k.rsa, "made-up-"+string(rune('a'+i))), "kid")
	}
	if n := p.hits.Load(); n != 2 {
		t.Errorf("%d fetches after 20 made-up kids within min_refresh, want still 2", n)
	}
}

func TestJWKSFailedRefreshKeepsTheSet(t *testing.T) {
	k := newTestKeys(t)
	p := newIDP(t, jwksDoc(t, jwkJSON(t, "a", "RS256", k.rsa)))
	clock := &testClock{t: testNow()}
	var mu sync.Mutex
	var results []error
	a, err := NewWith(jwksConfig(config.JWKS{URL: p.srv.URL, CAFile: p.caFile}), Options{Now: clock.Now,
		OnJWKSRefresh: func(err error) { mu.Lock(); results = append(results, err); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	tok := signKid(t, jwt.SigningMethodRS256, k.rsa, "a")
	for name, breakIt := range map[string]func(){
		"500":         func() { p.fail.Store(true) },
		"not a JWKS":  func() { p.fail.Store(false); p.set([]byte("<html>login</html>")) },
		"no key left": func() { p.set(jwksDoc(t, map[string]any{"kty": "oct", "k": "c2VjcmV0", "kid": "a"})) },
	} {
		breakIt()
		clock.Add(6 * time.Minute) // past refresh
		mustAccept(t, a, "after a failed refresh ("+name+")", tok)
	}
	st := a.JWKSStatus()
	if st == nil || st.LastError == "" || len(st.Keys) != 1 || st.Keys[0] != "a RS256" || !st.ReadAt.Equal(testNow()) {
		t.Errorf("status after failed refreshes: %+v, want the first read's key and time and the last error", st)
	}
	p.set(jwksDoc(t, jwkJSON(t, "a", "RS256", k.rsa), jwkJSON(t, "", "", k.ed)))
	clock.Add(6 * time.Minute)
	mustAccept(t, a, "after the provider is back", tok)
	if st := a.JWKSStatus(); st.LastError != "" || len(st.Keys) != 2 || st.Keys[1] != "- EdDSA" || !st.ReadAt.Equal(clock.Now()) {
		t.Errorf("status after a good refresh: %+v", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(results) != 4 {
		t.Fatalf("%d refreshes reported, want 3", len(results))
	}
	for i, err := range results {
		if (err == nil) != (i == 3) {
			t.Errorf("refresh %d reported %v", i, err)
		}
	}
}

func TestJWKSRemovedKeyStopsVerifyingAfterTheRefresh(t *testing.T) {
	k := newTestKeys(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "jwks.json")
	write := func(doc []byte) {
		// Written aside and renamed, as a deploy tool would.
		if err := os.WriteFile(file+".tmp", doc, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(file+".tmp", file); err != nil {
			t.Fatal(err)
		}
	}
	write(jwksDoc(t, jwkJSON(t, "old", "RS256", k.rsa), jwkJSON(t, "new", "EdDSA", k.ed)))
	clock := &testClock{t: testNow()}
	a, err := NewWith(jwksConfig(config.JWKS{File: file}), Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	oldTok, newTok := signKid(t, jwt.SigningMethodRS256, k.rsa, "old"), signKid(t, jwt.SigningMethodEdDSA, k.ed, "new")
	mustAccept(t, a, "old key before its removal", oldTok)
	mustAccept(t, a, "new key", newTok)

	write(jwksDoc(t, jwkJSON(t, "new", "EdDSA", k.ed)))
	clock.Add(4 * time.Minute)
	mustAccept(t, a, "old key before the refresh is due", oldTok)
	clock.Add(2 * time.Minute)
	mustRefuse(t, a, "old key after the refresh", oldTok, "kid")
	mustAccept(t, a, "new key after the refresh", newTok)
	// The same key without its kid is not taken for the new one either.
	mustRefuse(t, a, "old key without kid", signKid(t, jwt.SigningMethodRS256, k.rsa, ""), "")
}

func TestJWKSAlgorithmConfusionIsRefused(t *testing.T) {
	k := newTestKeys(t)
	secret := []byte("0123456789abcdef0123456789abcdef")
	p := newIDP(t, jwksDoc(t,
		jwkJSON(t, "rsa", "RS256", k.rsa),
		jwkJSON(t, "ps", "PS256", k.ps),
		jwkJSON(t, "ec", "ES256", k.ec),
		// An HMAC secret in the set is left out, never used.
		map[string]any{"kty": "oct", "kid": "hmac", "alg": "HS256", "k": base64.RawURLEncoding.EncodeToString(secret)},
		// An encryption key is not a signature key.
		func() map[string]any { m := jwkJSON(t, "enc", "", k.rsa2); m["use"] = "enc"; return m }(),
	))
	a, err := NewWith(jwksConfig(config.JWKS{URL: p.srv.URL, CAFile: p.caFile}), Options{Now: testNow})
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	unsigned := func(alg, kid string) string {
		h, _ := json.Marshal(map[string]any{"alg": alg, "kid": kid, "typ": "JWT"})
		c, _ := json.Marshal(claims(nil))
		return "Bearer " + rawJWT(string(h), string(c), "")
	}
	for name, tok := range map[string]string{
		"HS256 with the RSA key's PEM as secret": signKid(t, jwt.SigningMethodHS256, pemKey, "rsa"),
		"HS256 with the RSA key's DER as secret": signKid(t, jwt.SigningMethodHS256, der, "rsa"),
		"HS256 with the set's oct secret":        signKid(t, jwt.SigningMethodHS256, secret, "hmac"),
		"HS256 without kid":                      signKid(t, jwt.SigningMethodHS256, secret, ""),
		"alg none":                               unsigned("none", "rsa"),
		"RS256 under the PS256 key's kid":        signKid(t, jwt.SigningMethodRS256, k.ps, "ps"),
		"PS256 under the RS256 key's kid":        signKid(t, jwt.SigningMethodPS256, k.rsa, "rsa"),
		"RS384 under the RS256 key's kid":        signKid(t, jwt.SigningMethodRS384, k.rsa, "rsa"),
		"ES256 under the RSA key's kid":          signKid(t, jwt.SigningMethodES256, k.ec, "rsa"),
		"the encryption key's token":             signKid(t, jwt.SigningMethodRS256, k.rsa2, "enc"),
	} {
		mustRefuse(t, a, name, tok, "")
	}
	// An empty kid is no kid of a key without one.
	q := newIDP(t, jwksDoc(t, jwkJSON(t, "", "", k.rsa), jwkJSON(t, "", "", k.rsa2)))
	b, err := NewWith(jwksConfig(config.JWKS{URL: q.srv.URL, CAFile: q.caFile}), Options{Now: testNow})
	if err != nil {
		t.Fatal(err)
	}
	mustRefuse(t, b, "an empty kid", signKid2(t, k.rsa, ""), "kid")
	mustRefuse(t, b, "no kid, two keys without one", signKid(t, jwt.SigningMethodRS256, k.rsa, ""), "several keys")
	// Keys a token brings along (jwk, jku, x5u) are never used or fetched.
	var fetchedFromToken atomic.Int64
	evil := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetchedFromToken.Add(1)
		w.Write(jwksDoc(t, jwkJSON(t, "evil", "RS256", k.rsa2)))
	}))
	defer evil.Close()
	carried := jwt.NewWithClaims(jwt.SigningMethodRS256, claims(nil))
	carried.Header["kid"] = "evil"
	carried.Header["jwk"] = jwkJSON(t, "evil", "RS256", k.rsa2)
	carried.Header["jku"] = evil.URL
	carried.Header["x5u"] = evil.URL
	s, err := carried.SignedString(k.rsa2)
	if err != nil {
		t.Fatal(err)
	}
	mustRefuse(t, a, "a token carrying its own key", "Bearer "+s, "kid")
	if fetchedFromToken.Load() != 0 {
		t.Error("a token's jku or x5u was fetched")
	}
	// A kid that is not a string.
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims(nil))
	tok.Header["kid"] = 7
	s, _ = tok.SignedString(k.rsa)
	mustRefuse(t, a, "a numeric kid", "Bearer "+s, "kid")
}

func TestJWKSRefreshWaitsAtMostTheTimeout(t *testing.T) {
	k := newTestKeys(t)
	p := newIDP(t, jwksDoc(t, jwkJSON(t, "a", "RS256", k.rsa)))
	clock := &testClock{t: testNow()}
	var failed atomic.Int64
	a, err := NewWith(jwksConfig(config.JWKS{URL: p.srv.URL, CAFile: p.caFile, Timeout: 300 * time.Millisecond}),
		Options{Now: clock.Now, OnJWKSRefresh: func(err error) {
			if err != nil {
				failed.Add(1)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	p.hangOn.Store(true)
	clock.Add(6 * time.Minute)
	start := time.Now()
	mustAccept(t, a, "a known kid while the provider hangs", signKid(t, jwt.SigningMethodRS256, k.rsa, "a"))
	mustRefuse(t, a, "an unknown kid while the provider hangs", signKid(t, jwt.SigningMethodRS256, k.rsa, "b"), "kid")
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("requests waited %s for a hanging provider, timeout 300ms", d)
	}
	deadline := time.Now().Add(5 * time.Second)
	for failed.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if failed.Load() != 1 {
		t.Errorf("%d failed refreshes reported, want 1", failed.Load())
	}
}

func TestJWKSRebuiltAuthenticatorKeepsTheSet(t *testing.T) {
	k := newTestKeys(t)
	p := newIDP(t, jwksDoc(t, jwkJSON(t, "a", "RS256", k.rsa)))
	cfg := jwksConfig(config.JWKS{URL: p.srv.URL, CAFile: p.caFile})
	a, err := NewWith(cfg, Options{Now: testNow})
	if err != nil {
		t.Fatal(err)
	}
	p.fail.Store(true)
	b, err := NewWith(cfg, Options{Now: testNow, Previous: a})
	if err != nil {
		t.Fatalf("a rebuild with the same key set fetched it again: %v", err)
	}
	mustAccept(t, b, "the rebuilt authenticator", signKid(t, jwt.SigningMethodRS256, k.rsa, "a"))
	other := cfg
	other.JWT.JWKS.Timeout = time.Second
	if _, err := NewWith(other, Options{Now: testNow, Previous: a}); err == nil {
		t.Error("changed key set settings did not read the set again (the provider answers 500)")
	}
}

func TestJWKSRefusedAtLoad(t *testing.T) {
	k := newTestKeys(t)
	good := jwksDoc(t, jwkJSON(t, "a", "RS256", k.rsa))
	p := newIDP(t, good)
	dir := t.TempDir()
	file := func(doc []byte) string {
		f, err := os.CreateTemp(dir, "jwks")
		if err != nil {
			t.Fatal(err)
		}
		f.Write(doc)
		f.Close()
		return f.Name()
	}
	short, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, p.srv.URL, http.StatusFound)
	}))
	defer plain.Close()
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusInternalServerError)
	}))
	defer failing.Close()
	for name, c := range map[string]struct {
		k    config.JWKS
		want string
	}{
		"TLS not trusted (no ca_file)": {config.JWKS{URL: p.srv.URL}, "certificate"},
		"http to a non-loopback host":  {config.JWKS{URL: "http://idp.example/jwks.json"}, "https"},
		"a redirect":                   {config.JWKS{URL: plain.URL}, "redirects"},
		"a missing ca_file":            {config.JWKS{URL: p.srv.URL, CAFile: p.caFile + ".gone"}, "ca_file"},
		"a 500":                        {config.JWKS{URL: failing.URL}, "500"},
		"an oct key only":              {config.JWKS{File: file(jwksDoc(t, map[string]any{"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}))}, "no key"},
		"an RSA key of 1024 bits":      {config.JWKS{File: file(jwksDoc(t, jwkJSON(t, "a", "RS256", short)))}, "no key"},
		"two keys under one kid":       {config.JWKS{File: file(jwksDoc(t, jwkJSON(t, "a", "RS256", k.rsa), jwkJSON(t, "a", "EdDSA", k.ed)))}, "two keys"},
		"an EC key with another alg":   {config.JWKS{File: file(jwksDoc(t, jwkJSON(t, "a", "ES384", k.ec)))}, "no key"},
		"an RSA key with alg HS256":    {config.JWKS{File: file(jwksDoc(t, jwkJSON(t, "a", "HS256", k.rsa)))}, "no key"},
		"not JSON":                     {config.JWKS{File: file([]byte("keys: []"))}, "not a JSON Web Key Set"},
		"a missing file":               {config.JWKS{File: filepath.Join(dir, "gone.json")}, "no such file"},
	} {
		_, err := NewWith(jwksConfig(c.k), Options{Now: testNow})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, c.want)
		}
	}
	// A URL's query (it may hold a key of the provider's) is not repeated.
	_, err = NewWith(jwksConfig(config.JWKS{URL: p.srv.URL + "/jwks?api_key=sekrit"}), Options{Now: testNow})
	if err == nil || strings.Contains(err.Error(), "sekrit") || !strings.Contains(err.Error(), "/jwks") {
		t.Errorf("an untrusted URL with a query: %v, want an error naming the URL without its query", err)
	}
	if a, err := NewWith(jwksConfig(config.JWKS{URL: p.srv.URL + "/jwks?api_key=sekrit", CAFile: p.caFile}), Options{Now: testNow}); err != nil {
		t.Error(err)
	} else if st := a.JWKSStatus(); strings.Contains(st.Source, "sekrit") || !strings.HasSuffix(st.Source, "/jwks") {
		t.Errorf("status source %q", st.Source)
	}
	// With the algorithm settings, or without an audience.
	both := jwksConfig(config.JWKS{URL: p.srv.URL, CAFile: p.caFile})
	both.JWT.Algorithm, both.JWT.PublicKey = "RS256", "/etc/orderly/idp.pem"
	if _, err := NewWith(both, Options{Now: testNow}); err == nil {
		t.Error("jwks with algorithm and public_key accepted")
	}
	noAud := jwksConfig(config.JWKS{URL: p.srv.URL, CAFile: p.caFile})
	noAud.JWT.Audience = ""
	if _, err := NewWith(noAud, Options{Now: testNow}); err == nil {
		t.Error("jwks without an audience accepted")
	}
	// http:// to loopback is allowed.
	loop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(good) }))
	defer loop.Close()
	a, err := NewWith(jwksConfig(config.JWKS{URL: loop.URL}), Options{Now: testNow})
	if err != nil {
		t.Fatalf("http:// to loopback: %v", err)
	}
	mustAccept(t, a, "from a loopback http:// set", signKid(t, jwt.SigningMethodRS256, k.rsa, "a"))
}

// TestJWKSConcurrentRequestsShareOneFetch: tokens of a new kid arriving
// together after a rotation cost the provider one fetch, and all verify.
func TestJWKSConcurrentRequestsShareOneFetch(t *testing.T) {
	k := newTestKeys(t)
	p := newIDP(t, jwksDoc(t, jwkJSON(t, "a", "RS256", k.rsa)))
	clock := &testClock{t: testNow()}
	a, err := NewWith(jwksConfig(config.JWKS{URL: p.srv.URL, CAFile: p.caFile}), Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	p.set(jwksDoc(t, jwkJSON(t, "a", "RS256", k.rsa), jwkJSON(t, "b", "EdDSA", k.ed)))
	clock.Add(time.Minute)
	tok := signKid(t, jwt.SigningMethodEdDSA, k.ed, "b")
	var wg sync.WaitGroup
	var refused atomic.Int64
	for range 50 {
		wg.Go(func() {
			if _, err := a.Authenticate(tok); err != nil {
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	if refused.Load() != 0 {
		t.Errorf("%d of 50 tokens of the new key refused", refused.Load())
	}
	if n := p.hits.Load(); n != 2 {
		t.Errorf("%d fetches for 50 tokens of one new kid, want 2 (load, one refresh)", n)
	}
}
