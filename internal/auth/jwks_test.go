package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
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
	// cacheControl is the Cache-Control header of its answers ("": none).
	cacheControl atomic.Pointer[string]
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
		if cc := p.cacheControl.Load(); cc != nil && *cc != "" {
			w.Header().Set("Cache-Control", *cc)
		}
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

// refreshes reports each refresh's error on a channel, so a test can
// wait for a read started in the background.
func refreshes() (chan error, func(error)) {
	ch := make(chan error, 100)
	return ch, func(err error) { ch <- err }
}

// nextRefresh waits for the next refresh to end and returns its error.
func nextRefresh(t *testing.T, ch chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("no refresh of the key set ended within 10s")
		return nil
	}
}

// TestJWKSFailedRefreshKeepsTheSetUntilItExpires: reads that fail keep
// the set in use until refresh has passed since the last good read;
// then its keys, which the provider may have removed meanwhile, no
// longer verify.
func TestJWKSFailedRefreshKeepsTheSetUntilItExpires(t *testing.T) {
	k := newTestKeys(t)
	p := newIDP(t, jwksDoc(t, jwkJSON(t, "a", "RS256", k.rsa)))
	clock := &testClock{t: testNow()}
	ch, onRefresh := refreshes()
	a, err := NewWith(jwksConfig(config.JWKS{URL: p.srv.URL, CAFile: p.caFile}), Options{Now: clock.Now, OnJWKSRefresh: onRefresh})
	if err != nil {
		t.Fatal(err)
	}
	tok := signKid(t, jwt.SigningMethodRS256, k.rsa, "a")
	// Each failure in the half of refresh left once the set is due to be
	// read again (2m30s of 5m): the set in hand verifies, and the read,
	// in the background, fails.
	for i, breakIt := range []func(){
		func() { p.fail.Store(true) },                                                           // a 500
		func() { p.fail.Store(false); p.set([]byte("<html>login</html>")) },                     // not a JWKS
		func() { p.set(jwksDoc(t, map[string]any{"kty": "oct", "k": "c2VjcmV0", "kid": "a"})) }, // no key left
	} {
		breakIt()
		clock.Add(map[bool]time.Duration{true: 2*time.Minute + 40*time.Second, false: 40 * time.Second}[i == 0])
		mustAccept(t, a, fmt.Sprintf("after failed read %d, before the set expires", i), tok)
		if err := nextRefresh(t, ch); err == nil {
			t.Fatalf("read %d did not fail", i)
		}
	}
	st := a.JWKSStatus()
	if st == nil || st.LastError == "" || len(st.Keys) != 1 || st.Keys[0] != "a RS256" || !st.ReadAt.Equal(testNow()) ||
		!st.ExpiresAt.Equal(testNow().Add(5*time.Minute)) {
		t.Errorf("status after failed refreshes: %+v, want the first read's key and time, the last error, expiry 5m after the read", st)
	}
	// Past refresh since the last good read (4m + 1m10s), with the
	// provider still failing: the key is refused, whoever asks.
	clock.Add(time.Minute + 10*time.Second)
	mustRefuse(t, a, "once the set has expired", tok, "could not be read again")
	if err := nextRefresh(t, ch); err == nil {
		t.Fatal("the read at expiry did not fail")
	}
	// Within min_refresh of that read, nothing is read and still nothing verifies.
	before := p.hits.Load()
	mustRefuse(t, a, "expired, within min_refresh", tok, "could not be read again")
	if p.hits.Load() != before {
		t.Error("an expired set was read again within min_refresh")
	}
	p.set(jwksDoc(t, jwkJSON(t, "a", "RS256", k.rsa), jwkJSON(t, "", "", k.ed)))
	clock.Add(31 * time.Second)
	mustAccept(t, a, "after the provider is back", tok)
	if err := nextRefresh(t, ch); err != nil {
		t.Fatalf("the read after the provider is back: %v", err)
	}
	if st := a.JWKSStatus(); st.LastError != "" || len(st.Keys) != 2 || st.Keys[1] != "- EdDSA" || !st.ReadAt.Equal(clock.Now()) {
		t.Errorf("status after a good refresh: %+v", st)
	}
}

// TestJWKSIdleSetIsNotTrustedAfterTheRefresh: with no traffic nothing is
// read; a key the provider removed meanwhile must not verify the first
// token after refresh, even when the provider cannot be reached to say so
// (an attacker holding the removed key could block that read).
func TestJWKSIdleSetIsNotTrustedAfterTheRefresh(t *testing.T) {
	k := newTestKeys(t)
	p := newIDP(t, jwksDoc(t, jwkJSON(t, "old", "RS256", k.rsa)))
	clock := &testClock{t: testNow()}
	a, err := NewWith(jwksConfig(config.JWKS{URL: p.srv.URL, CAFile: p.caFile, Timeout: 300 * time.Millisecond}), Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	oldTok := signKid(t, jwt.SigningMethodRS256, k.rsa, "old")
	mustAccept(t, a, "the key while published", oldTok)
	p.set(jwksDoc(t, jwkJSON(t, "new", "RS256", k.rsa2)))
	clock.Add(5*time.Minute + time.Second)
	for name, cut := range map[string]func(bool){"hangs": p.hangOn.Store, "answers 500": p.fail.Store} {
		cut(true)
		mustRefuse(t, a, "the removed key, the provider "+name, oldTok, "could not be read again")
		cut(false)
		clock.Add(31 * time.Second)
	}
	mustRefuse(t, a, "the removed key, the provider back", oldTok, "kid")
	mustAccept(t, a, "the new key", signKid(t, jwt.SigningMethodRS256, k.rsa2, "new"))
}

// TestJWKSReadsAheadInTheBackground: once the set is due, a request
// starts a read and does not wait for it; the read's result serves the
// next requests, and a removed key stops verifying without any request
// having waited for the provider.
func TestJWKSReadsAheadInTheBackground(t *testing.T) {
	k := newTestKeys(t)
	p := newIDP(t, jwksDoc(t, jwkJSON(t, "old", "RS256", k.rsa), jwkJSON(t, "new", "EdDSA", k.ed)))
	clock := &testClock{t: testNow()}
	ch, onRefresh := refreshes()
	a, err := NewWith(jwksConfig(config.JWKS{URL: p.srv.URL, CAFile: p.caFile, Timeout: 3 * time.Second}), Options{Now: clock.Now, OnJWKSRefresh: onRefresh})
	if err != nil {
		t.Fatal(err)
	}
	oldTok := signKid(t, jwt.SigningMethodRS256, k.rsa, "old")
	clock.Add(2*time.Minute + 29*time.Second)
	mustAccept(t, a, "before the set is due", oldTok)
	if p.hits.Load() != 1 {
		t.Fatalf("%d reads before the set is due, want 1 (at load)", p.hits.Load())
	}
	// Due; the provider hangs: the request goes on at once.
	p.set(jwksDoc(t, jwkJSON(t, "new", "EdDSA", k.ed)))
	p.hangOn.Store(true)
	clock.Add(2 * time.Second)
	start := time.Now()
	mustAccept(t, a, "due, the provider hanging", oldTok)
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("a request waited %s for a read due in the background (timeout 3s)", d)
	}
	if err := nextRefresh(t, ch); err == nil {
		t.Fatal("the read from a hanging provider did not fail")
	}
	// The provider answers; the next request min_refresh later starts
	// the read again, and once it has ended the removed key is refused.
	p.hangOn.Store(false)
	clock.Add(31 * time.Second)
	mustAccept(t, a, "still the set in hand while the read runs", oldTok)
	if err := nextRefresh(t, ch); err != nil {
		t.Fatal(err)
	}
	mustRefuse(t, a, "the removed key after the background read", oldTok, "kid")
	mustAccept(t, a, "the key still published", signKid(t, jwt.SigningMethodEdDSA, k.ed, "new"))
	if st := a.JWKSStatus(); !st.NextRead.Equal(st.ReadAt.Add(150 * time.Second)) {
		t.Errorf("next read %s after the read, want 2m30s (half of refresh)", st.NextRead.Sub(st.ReadAt))
	}
}

// TestJWKSHonoursTheProvidersMaxAge: Cache-Control max-age (less Age)
// brings the next read forward, down to min_refresh; it never puts it
// past half of refresh.
func TestJWKSHonoursTheProvidersMaxAge(t *testing.T) {
	k := newTestKeys(t)
	p := newIDP(t, jwksDoc(t, jwkJSON(t, "a", "RS256", k.rsa)))
	for cc, want := range map[string]time.Duration{
		"":                                 150 * time.Second,
		"public, max-age=60":               60 * time.Second,
		`max-age="90", must-revalidate`:    90 * time.Second,
		"max-age=86400":                    150 * time.Second,
		"max-age=5":                        30 * time.Second,
		"no-store":                         30 * time.Second,
		"no-cache, max-age=600":            30 * time.Second,
		"max-age=120, s-maxage=10":         120 * time.Second,
		"max-age=abc":                      30 * time.Second,
		"max-age=999999999999999999999999": 150 * time.Second,
	} {
		p.cacheControl.Store(&cc)
		a, err := NewWith(jwksConfig(config.JWKS{URL: p.srv.URL, CAFile: p.caFile}), Options{Now: testNow})
		if err != nil {
			t.Fatal(err)
		}
		if st := a.JWKSStatus(); st.NextRead.Sub(st.ReadAt) != want {
			t.Errorf("Cache-Control %q: next read %s after the read, want %s", cc, st.NextRead.Sub(st.ReadAt), want)
		}
	}
	// The behaviour: with max-age=60 the set is read again after 60s.
	cc := "max-age=60"
	p.cacheControl.Store(&cc)
	clock := &testClock{t: testNow()}
	ch, onRefresh := refreshes()
	a, err := NewWith(jwksConfig(config.JWKS{URL: p.srv.URL, CAFile: p.caFile}), Options{Now: clock.Now, OnJWKSRefresh: onRefresh})
	if err != nil {
		t.Fatal(err)
	}
	tok := signKid(t, jwt.SigningMethodRS256, k.rsa, "a")
	before := p.hits.Load()
	clock.Add(59 * time.Second)
	mustAccept(t, a, "within max-age", tok)
	if p.hits.Load() != before {
		t.Error("the set was read within the provider's max-age")
	}
	clock.Add(2 * time.Second)
	mustAccept(t, a, "past max-age", tok)
	if err := nextRefresh(t, ch); err != nil {
		t.Fatal(err)
	}
	if p.hits.Load() != before+1 {
		t.Errorf("%d reads past the provider's max-age, want 1", p.hits.Load()-before)
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
	clock.Add(time.Minute)
	start := time.Now()
	mustRefuse(t, a, "an unknown kid while the provider hangs", signKid(t, jwt.SigningMethodRS256, k.rsa, "b"), "kid")
	mustAccept(t, a, "a known kid while the provider hangs", signKid(t, jwt.SigningMethodRS256, k.rsa, "a"))
	clock.Add(5 * time.Minute)
	mustRefuse(t, a, "an expired set while the provider hangs", signKid(t, jwt.SigningMethodRS256, k.rsa, "a"), "could not be read again")
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("requests waited %s for a hanging provider, timeout 300ms", d)
	}
	deadline := time.Now().Add(5 * time.Second)
	for failed.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if failed.Load() != 2 {
		t.Errorf("%d failed refreshes reported, want 2", failed.Load())
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
	// Without a ca_file the handshake checks the server against the
	// system's roots, which the process reads and parses at its first
	// use: 10 s at a twentieth of a core under -race, past the 2 s the
	// other reads get. What these cases prove is the refusal, not a bound.
	systemRoots := 20 * time.Second
	for name, c := range map[string]struct {
		k    config.JWKS
		want string
	}{
		"TLS not trusted (no ca_file)": {config.JWKS{URL: p.srv.URL, Timeout: systemRoots}, "certificate"},
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
	_, err = NewWith(jwksConfig(config.JWKS{URL: p.srv.URL + "/jwks?api_key=sekrit", Timeout: systemRoots}), Options{Now: testNow})
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

// testCA is a certificate authority of a test's own and a certificate it
// signed for 127.0.0.1.
func testCA(t *testing.T, name string) (caPEM []byte, leaf tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "idp"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestJWKSCAFileIsReadAgain: the provider moves to a certificate of
// another CA and the operator puts that CA in ca_file, under the same
// path. A reload reads ca_file again (a broken one refuses the reload, a
// new one reads the set with it), and so does every read of the set,
// reload or not.
func TestJWKSCAFileIsReadAgain(t *testing.T) {
	k := newTestKeys(t)
	ca1, cert1 := testCA(t, "ca one")
	ca2, cert2 := testCA(t, "ca two")
	var cert atomic.Pointer[tls.Certificate]
	cert.Store(&cert1)
	var hits atomic.Int64
	doc := jwksDoc(t, jwkJSON(t, "a", "RS256", k.rsa))
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write(doc)
	}))
	// GetConfigForClient, not GetCertificate: a client dialling an IP
	// sends no server name, and the certificate would be httptest's own.
	srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return &tls.Config{Certificates: []tls.Certificate{*cert.Load()}}, nil
	}}
	srv.StartTLS()
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	writeCA := func(b []byte) {
		if err := os.WriteFile(caFile, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeCA(ca1)
	cfg := jwksConfig(config.JWKS{URL: srv.URL, CAFile: caFile})
	clock := &testClock{t: testNow()}
	ch, onRefresh := refreshes()
	a, err := NewWith(cfg, Options{Now: clock.Now, OnJWKSRefresh: onRefresh})
	if err != nil {
		t.Fatal(err)
	}
	tok := signKid(t, jwt.SigningMethodRS256, k.rsa, "a")
	mustAccept(t, a, "through CA one", tok)

	cert.Store(&cert2)
	writeCA([]byte("not a certificate\n"))
	if _, err := NewWith(cfg, Options{Now: clock.Now, Previous: a}); err == nil || !strings.Contains(err.Error(), "ca_file") {
		t.Errorf("a reload with a ca_file holding no certificate: %v, want it refused naming ca_file", err)
	}
	writeCA(ca1)
	if _, err := NewWith(cfg, Options{Now: clock.Now, Previous: a}); err != nil {
		t.Errorf("a reload with ca_file unchanged read the set again: %v", err)
	}
	writeCA(ca2)
	before := hits.Load()
	b, err := NewWith(cfg, Options{Now: clock.Now, Previous: a})
	if err != nil {
		t.Fatalf("a reload with the new CA in ca_file: %v", err)
	}
	if hits.Load() != before+1 {
		t.Errorf("%d reads at the reload with a new ca_file, want 1", hits.Load()-before)
	}
	mustAccept(t, b, "through CA two, after the reload", tok)
	// The authenticator left behind reads the set with CA two as well.
	clock.Add(3 * time.Minute)
	mustAccept(t, a, "the first authenticator, due", tok)
	if err := nextRefresh(t, ch); err != nil {
		t.Errorf("a read after ca_file changed, without a reload: %v", err)
	}
}

// TestJWKSEd25519AlgorithmName: RFC 9864's "Ed25519" is EdDSA with an
// Ed25519 key under its fully specified name; the two names are one
// algorithm for an Ed25519 key and for no other.
func TestJWKSEd25519AlgorithmName(t *testing.T) {
	k := newTestKeys(t)
	_, otherEd, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := newIDP(t, jwksDoc(t,
		jwkJSON(t, "ed-9864", "Ed25519", k.ed),
		jwkJSON(t, "ed-plain", "", k.ed),
		jwkJSON(t, "rsa", "RS256", k.rsa),
		// Not Ed25519 keys: left out.
		jwkJSON(t, "ec-ed", "Ed25519", k.ec),
		jwkJSON(t, "rsa-ed", "Ed25519", k.rsa2),
	))
	a, err := NewWith(jwksConfig(config.JWKS{URL: p.srv.URL, CAFile: p.caFile}), Options{Now: testNow})
	if err != nil {
		t.Fatal(err)
	}
	ed25519Method := &signingMethodEd25519{}
	mustAccept(t, a, "Ed25519 under an Ed25519 key", signKid(t, ed25519Method, k.ed, "ed-9864"))
	mustAccept(t, a, "Ed25519 under an Ed25519 key without alg", signKid(t, ed25519Method, k.ed, "ed-plain"))
	mustAccept(t, a, "EdDSA under an Ed25519 key", signKid(t, jwt.SigningMethodEdDSA, k.ed, "ed-9864"))
	mustRefuse(t, a, "Ed25519 signed by another key", signKid(t, ed25519Method, otherEd, "ed-9864"), "invalid token")
	mustRefuse(t, a, "Ed25519 under the RSA key's kid", signKid(t, ed25519Method, k.ed, "rsa"), "")
	mustRefuse(t, a, "Ed25519 under a left-out EC key's kid", signKid(t, ed25519Method, k.ed, "ec-ed"), "kid")
	mustRefuse(t, a, "Ed25519 without kid, two Ed25519 keys", signKid(t, ed25519Method, k.ed, ""), "several keys")
	// A header saying Ed25519 over an RS256 signature by the RSA key.
	rs := jwt.NewWithClaims(jwt.SigningMethodRS256, claims(nil))
	rs.Header["kid"] = "rsa"
	s, err := rs.SignedString(k.rsa)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(s, ".")
	h, _ := json.Marshal(map[string]any{"alg": "Ed25519", "kid": "rsa", "typ": "JWT"})
	mustRefuse(t, a, "an RS256 signature labelled Ed25519", "Bearer "+base64.RawURLEncoding.EncodeToString(h)+"."+parts[1]+"."+parts[2], "")
	st := a.JWKSStatus()
	if strings.Join(st.Keys, ",") != "ed-9864 Ed25519,ed-plain EdDSA,rsa RS256" {
		t.Errorf("keys %v", st.Keys)
	}
}

// TestJWTSingleEd25519KeyTakesBothNames: a single configured Ed25519 key,
// under auth.jwt.algorithm EdDSA or RFC 9864's Ed25519, verifies tokens
// whose header says either name, as a key set's Ed25519 key does
// (TestJWKSEd25519AlgorithmName); a header naming another algorithm, or
// a signature by another key, is refused; and the previous key of a
// rotation takes both names too.
func TestJWTSingleEd25519KeyTakesBothNames(t *testing.T) {
	k := newTestKeys(t)
	_, otherEd, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPath, edPEM := writePEM(t, k.ed.Public())
	otherPath, _ := writePEM(t, otherEd.Public())
	ed25519Method := &signingMethodEd25519{}
	for _, alg := range []string{"EdDSA", "Ed25519", "ed25519"} {
		t.Run(alg, func(t *testing.T) {
			a, err := New(config.Auth{JWT: config.JWT{Algorithm: alg, PublicKey: edPath}}, testNow)
			if err != nil {
				t.Fatal(err)
			}
			mustAccept(t, a, "header Ed25519", signKid(t, ed25519Method, k.ed, ""))
			mustAccept(t, a, "header EdDSA", signKid(t, jwt.SigningMethodEdDSA, k.ed, ""))
			mustRefuse(t, a, "Ed25519 signed by another key", signKid(t, ed25519Method, otherEd, ""), "invalid token")
			mustRefuse(t, a, "HS256 with the PEM as secret", signKid(t, jwt.SigningMethodHS256, edPEM, ""), "")
			mustRefuse(t, a, "RS256", signKid(t, jwt.SigningMethodRS256, k.rsa, ""), "")

			// Rotation: a token by the previous key, under either name.
			r, err := New(config.Auth{JWT: config.JWT{Algorithm: alg, PublicKey: otherPath, PreviousPublicKey: edPath}}, testNow)
			if err != nil {
				t.Fatal(err)
			}
			mustAccept(t, r, "previous key, header Ed25519", signKid(t, ed25519Method, k.ed, ""))
			mustAccept(t, r, "current key, header EdDSA", signKid(t, jwt.SigningMethodEdDSA, otherEd, ""))
		})
	}
	rs, err := New(config.Auth{JWT: config.JWT{Algorithm: "RS256", PublicKey: mustWritePEM(t, k.rsa.Public())}}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	mustRefuse(t, rs, "Ed25519 against an RS256 key", signKid(t, ed25519Method, k.ed, ""), "")
}

func mustWritePEM(t *testing.T, pub any) string {
	p, _ := writePEM(t, pub)
	return p
}

// TestJWKSMaxStaleRidesOutAnOutage: with max_stale above refresh, a set
// the provider cannot serve again is read by the request that finds it
// older than refresh and, that read failing, still verifies until
// max_stale after its last good read; then nothing does.
func TestJWKSMaxStaleRidesOutAnOutage(t *testing.T) {
	k := newTestKeys(t)
	p := newIDP(t, jwksDoc(t, jwkJSON(t, "a", "RS256", k.rsa)))
	clock := &testClock{t: testNow()}
	ch, onRefresh := refreshes()
	a, err := NewWith(jwksConfig(config.JWKS{URL: p.srv.URL, CAFile: p.caFile, MaxStale: 30 * time.Minute}), Options{Now: clock.Now, OnJWKSRefresh: onRefresh})
	if err != nil {
		t.Fatal(err)
	}
	tok := signKid(t, jwt.SigningMethodRS256, k.rsa, "a")
	p.fail.Store(true)
	clock.Add(10 * time.Minute) // past refresh (5m), within max_stale
	before := p.hits.Load()
	mustAccept(t, a, "past refresh, the provider failing, within max_stale", tok)
	if err := nextRefresh(t, ch); err == nil {
		t.Fatal("the read past refresh did not fail")
	}
	if p.hits.Load() == before {
		t.Error("a set older than refresh verified without being read again")
	}
	if st := a.JWKSStatus(); st == nil || !st.ExpiresAt.Equal(testNow().Add(30*time.Minute)) {
		t.Errorf("status: %+v, want expiry max_stale (30m) after the read", st)
	}
	clock.Add(20*time.Minute + time.Second) // max_stale after the last good read
	mustRefuse(t, a, "past max_stale", tok, "could not be read again")
	if err := nextRefresh(t, ch); err == nil {
		t.Fatal("the read at max_stale did not fail")
	}
	p.fail.Store(false)
	clock.Add(31 * time.Second)
	mustAccept(t, a, "after the provider is back", tok)
}
