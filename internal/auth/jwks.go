package auth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/orderly-run/orderly/internal/config"
)

// Limits on what a key set document may cost: it comes from the network.
const (
	maxJWKSBytes = 1 << 20
	maxJWKSKeys  = 100
)

// jwksAlgorithms are the algorithms a key from a key set may verify: the
// asymmetric ones golang-jwt has, and RFC 9864's "Ed25519" (the name
// that replaces "EdDSA" for Ed25519 keys; see registerEd25519). HMAC is
// not among them: a secret published in a document is no secret.
var jwksAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", algEd25519}

// algEd25519 is RFC 9864's fully specified name for EdDSA with Ed25519.
const algEd25519 = "Ed25519"

// signingMethodEd25519 is golang-jwt's EdDSA verification under RFC 9864's
// name: the same ed25519.Verify, with an ed25519.PublicKey only (the
// embedded Verify refuses any other key type).
type signingMethodEd25519 struct{ jwt.SigningMethodEd25519 }

func (*signingMethodEd25519) Alg() string { return algEd25519 }

// registerEd25519 adds "Ed25519" to golang-jwt's process-wide table of
// algorithms, which its parser looks a token's alg up in before any key
// is chosen. It is safe because every parser orderly builds names the
// algorithms it accepts (WithValidMethods): only the key set's parser and
// a single Ed25519 key's list this one. A golang-jwt that comes to know the name itself keeps
// its own.
var registerEd25519 = sync.OnceFunc(func() {
	if jwt.GetSigningMethod(algEd25519) == nil {
		m := &signingMethodEd25519{}
		jwt.RegisterSigningMethod(algEd25519, func() jwt.SigningMethod { return m })
	}
})

// sameAlg reports whether a key pinned to keyAlg verifies a token of
// tokenAlg: the same name, or "EdDSA" and "Ed25519", which with an
// Ed25519 key (the only kind parseJWK takes for them) are one algorithm.
func sameAlg(keyAlg, tokenAlg string) bool {
	if keyAlg == tokenAlg {
		return true
	}
	ed := func(a string) bool { return a == "EdDSA" || a == algEd25519 }
	return ed(keyAlg) && ed(tokenAlg)
}

// Errors a key set lookup refuses a token with (see jwtMessage).
var (
	errUnknownKid  = errors.New("token key id (kid) is not in the key set")
	errKidRequired = errors.New("token has no key id (kid) and several keys could verify it")
	errNoKeyForAlg = errors.New("no key in the key set verifies the token's algorithm")
	errKidNotText  = errors.New("token key id (kid) is not a string")
	// errKeySetExpired: the set could not be read again within refresh,
	// so a key the provider has since removed may be in it.
	errKeySetExpired = errors.New("the JWT key set could not be read again in time (auth.jwt.jwks.refresh); JWTs are refused until it is")
)

// jwk is one key of a set, pinned to the one algorithm it verifies.
type jwk struct {
	kid string // "" when the set gives none
	alg string
	key any // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

// keySet is one read of the document.
type keySet struct {
	keys []jwk
}

// find picks the key a token names (kid) or, without a kid, the one key
// of its algorithm.
func (s *keySet) find(kid string, hasKid bool, alg string) (jwk, error) {
	if hasKid {
		// An empty kid names no key: the keys without one are not
		// "the key whose kid is empty".
		for _, k := range s.keys {
			if k.kid != "" && k.kid == kid {
				return k, nil
			}
		}
		return jwk{}, errUnknownKid
	}
	var found []jwk
	for _, k := range s.keys {
		if sameAlg(k.alg, alg) {
			found = append(found, k)
		}
	}
	switch len(found) {
	case 0:
		return jwk{}, errNoKeyForAlg
	case 1:
		return found[0], nil
	}
	return jwk{}, errKidRequired
}

// jwksSource keeps the key set of auth.jwt.jwks. A set older than Refresh
// is read again by the request that meets it (at most Timeout) before it
// verifies anything, so that a key the provider removed stops verifying;
// if that read fails, the set is used until MaxStale after its last good
// read (riding out a provider outage that long), then it has expired and
// every token is refused rather than verified with a key the provider may
// have removed. It is read ahead of Refresh: once it is older than renew (half of
// Refresh, or what the provider's Cache-Control max-age says when that
// is less, never under MinRefresh), the next request starts a read in the
// background and goes on with the set in hand; a failed read is tried
// again by a request at least MinRefresh later, until the set expires. A
// request that meets an expired set, or a kid the set does not have,
// reads on its own goroutine (or waits for the read under way), at most
// Timeout. No read is started more often than MinRefresh.
//
// Every read ends within Timeout, so a background one needs no owner to
// stop it: an authenticator needs no closing, and one that is replaced
// leaves at most one read behind, for at most Timeout.
type jwksSource struct {
	cfg       config.JWKS
	now       func() time.Time
	logger    *slog.Logger
	onRefresh func(error)

	mu          sync.Mutex
	set         *keySet
	readAt      time.Time     // of the set in use
	renew       time.Duration // after readAt, the set is read again in the background
	caPEM       []byte        // the ca_file content the last good read trusted
	lastAttempt time.Time     // of the last read, failed or not
	lastErr     string        // why the last read failed; "" when it did not
	inflight    chan struct{} // closed when the read under way ends
}

// JWKSStatus is what GET /v1/status shows of the key set in use: public
// data (the provider publishes it), so an operator can see which keys
// verify and whether the last refresh failed.
type JWKSStatus struct {
	Source      string    `json:"source"`       // the file, or the URL without its query
	Keys        []string  `json:"keys"`         // "kid alg" ("- alg" for a key without kid)
	ReadAt      time.Time `json:"read_at"`      // when the set in use was read
	NextRead    time.Time `json:"next_read"`    // from when the next request reads it again
	ExpiresAt   time.Time `json:"expires_at"`   // when, not read again, it stops verifying
	LastAttempt time.Time `json:"last_attempt"` // the last read, failed or not
	LastError   string    `json:"last_error,omitempty"`
}

// JWKSStatus returns the key set's state, or nil without a key set.
func (a *Authenticator) JWKSStatus() *JWKSStatus {
	if a == nil || a.jwt == nil || a.jwt.jwks == nil {
		return nil
	}
	s := a.jwt.jwks
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &JWKSStatus{Source: s.where(), ReadAt: s.readAt, NextRead: s.readAt.Add(s.renew), ExpiresAt: s.readAt.Add(s.maxStale()),
		LastAttempt: s.lastAttempt, LastError: s.lastErr, Keys: []string{}}
	for _, k := range s.set.keys {
		kid := k.kid
		if kid == "" {
			kid = "-"
		}
		st.Keys = append(st.Keys, kid+" "+k.alg)
	}
	return st
}

// newJWKSSource reads the set once: a configured set that cannot be read
// at load is refused like a missing key file.
func newJWKSSource(cfg config.JWKS, o Options) (*jwksSource, error) {
	if cfg.URL != "" {
		if p := config.JWKSURLProblem(cfg.URL); p != "" {
			return nil, fmt.Errorf("auth.jwt.jwks.url %s", p)
		}
	}
	if cfg.Refresh <= 0 || cfg.MinRefresh <= 0 || cfg.Timeout <= 0 {
		return nil, errors.New("auth.jwt.jwks: refresh, min_refresh and timeout must be positive")
	}
	s := &jwksSource{cfg: cfg, now: o.Now, logger: o.Logger, onRefresh: o.OnJWKSRefresh}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	r, err := s.read(ctx)
	if err != nil {
		if errors.Is(err, errCAFile) {
			return nil, err
		}
		return nil, fmt.Errorf("auth.jwt.jwks: %w", err)
	}
	s.set, s.renew, s.caPEM = r.set, r.renew, r.caPEM
	s.readAt, s.lastAttempt = s.now(), s.now()
	return s, nil
}

// errCAFile marks a read that failed on auth.jwt.jwks.ca_file.
var errCAFile = errors.New("auth.jwt.jwks.ca_file")

// readCAFile returns ca_file's content, checked to hold a certificate.
func readCAFile(path string) ([]byte, *x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", errCAFile, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("%w %s: no PEM certificate in it", errCAFile, path)
	}
	return pem, pool, nil
}

// jwksClient verifies the server's certificate (against roots when not
// nil), follows no redirect (the configured URL is the one trusted),
// keeps no connection open and gives up after the timeout. It is built
// for each read, so each read trusts what ca_file holds then.
func jwksClient(cfg config.JWKS, roots *x509.CertPool) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	// A read every few minutes needs no pooled connection, and one left
	// idle would keep a goroutine of a replaced authenticator alive.
	tr.DisableKeepAlives = true
	return &http.Client{
		Transport: tr,
		Timeout:   cfg.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("the key set URL redirects; configure the URL it redirects to")
		},
	}
}

// sameSource reports whether s can stand for cfg in a rebuilt
// authenticator, keeping its set instead of reading it again: the same
// settings, and ca_file holding what the last good read trusted. A
// changed ca_file is so read again, with the set, at the reload (and
// refuses it when it does not verify the provider).
func (s *jwksSource) sameSource(cfg config.JWKS) bool {
	if s == nil || s.cfg != cfg {
		return false
	}
	if cfg.CAFile == "" {
		return true
	}
	pem, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Equal(pem, s.caPEM)
}

// current returns the set to verify with, or errKeySetExpired. A set
// older than renew has a read started in the background; one older than
// Refresh, or force (an unknown kid), has the calling request read it
// (or wait for the read under way), at most Timeout, and is refused once
// older than maxStale. No read starts within MinRefresh of the last.
func (s *jwksSource) current(force bool) (*keySet, error) {
	s.mu.Lock()
	now := s.now()
	age := now.Sub(s.readAt)
	if !force && age < s.renew {
		set := s.set
		s.mu.Unlock()
		return set, nil
	}
	canRead := s.inflight == nil && now.Sub(s.lastAttempt) >= s.cfg.MinRefresh
	if !force && age < s.cfg.Refresh {
		// Due, not expired: this request goes on with the set in hand.
		if canRead {
			go s.refresh(s.startLocked(now))
		}
		set := s.set
		s.mu.Unlock()
		return set, nil
	}
	if canRead {
		done := s.startLocked(now)
		s.mu.Unlock()
		s.refresh(done)
	} else if wait := s.inflight; wait != nil {
		s.mu.Unlock()
		t := time.NewTimer(s.cfg.Timeout)
		select {
		case <-wait:
		case <-t.C:
		}
		t.Stop()
	} else {
		s.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.now().Sub(s.readAt) >= s.maxStale() {
		return nil, errKeySetExpired
	}
	return s.set, nil
}

// maxStale is how long a set is used without a good read: MaxStale, and
// never less than Refresh (a configuration built without MaxStale).
func (s *jwksSource) maxStale() time.Duration {
	return max(s.cfg.MaxStale, s.cfg.Refresh)
}

// startLocked marks a read under way, started at now; s.mu is held. The
// channel it returns is closed by refresh when the read ends.
func (s *jwksSource) startLocked(now time.Time) chan struct{} {
	s.lastAttempt = now
	done := make(chan struct{})
	s.inflight = done
	return done
}

// refresh reads the set and swaps it in; a failure keeps the set in use
// (until it expires), logged and counted. done is closed when it ends.
func (s *jwksSource) refresh(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	r, err := s.read(ctx)
	s.mu.Lock()
	if err == nil {
		s.set, s.renew, s.caPEM, s.readAt, s.lastErr = r.set, r.renew, r.caPEM, s.now(), ""
	} else {
		s.lastErr = err.Error()
	}
	s.inflight = nil
	expires := s.readAt.Add(s.maxStale())
	s.mu.Unlock()
	close(done)
	if err != nil {
		s.logger.Warn("JWT key set could not be read again; the keys read before stay in use until they expire", "source", s.where(), "expires_at", expires, "error", err)
	}
	if s.onRefresh != nil {
		s.onRefresh(err)
	}
}

// where names the set in logs, errors and the status: the file, or the
// URL without its query (which may hold a key of the provider's).
func (s *jwksSource) where() string {
	if s.cfg.URL != "" {
		u, err := url.Parse(s.cfg.URL)
		if err != nil {
			return "the key set URL"
		}
		u.RawQuery, u.ForceQuery = "", false
		return u.String()
	}
	return s.cfg.File
}

// readResult is one good read: the set, when to read it again, and the
// ca_file content its TLS trusted.
type readResult struct {
	set   *keySet
	renew time.Duration
	caPEM []byte
}

// read fetches and parses the document.
func (s *jwksSource) read(ctx context.Context) (readResult, error) {
	var body []byte
	var r readResult
	fresh, hasFresh := time.Duration(0), false
	if s.cfg.File != "" {
		f, err := os.Open(s.cfg.File)
		if err != nil {
			return r, err
		}
		defer f.Close()
		body, err = io.ReadAll(io.LimitReader(f, maxJWKSBytes+1))
		if err != nil {
			return r, fmt.Errorf("%s: %w", s.cfg.File, err)
		}
	} else {
		var roots *x509.CertPool
		if s.cfg.CAFile != "" {
			var err error
			if r.caPEM, roots, err = readCAFile(s.cfg.CAFile); err != nil {
				return r, err
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.cfg.URL, nil)
		if err != nil {
			return r, err
		}
		req.Header.Set("Accept", "application/jwk-set+json, application/json")
		resp, err := jwksClient(s.cfg, roots).Do(req)
		if err != nil {
			// *url.Error names the whole URL; say it without the query.
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return r, fmt.Errorf("GET %s: %w", s.where(), err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return r, fmt.Errorf("%s answered %s", s.where(), resp.Status)
		}
		body, err = io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
		if err != nil {
			return r, fmt.Errorf("%s: %w", s.where(), err)
		}
		fresh, hasFresh = freshness(resp.Header)
	}
	if len(body) > maxJWKSBytes {
		return r, fmt.Errorf("%s: the key set is larger than %d bytes", s.where(), maxJWKSBytes)
	}
	set, skipped, err := parseJWKS(body)
	if err != nil {
		return r, fmt.Errorf("%s: %w", s.where(), err)
	}
	for _, m := range skipped {
		s.logger.Warn("JWT key set: a key is left out", "source", s.where(), "reason", m)
	}
	r.set, r.renew = set, renewAfter(s.cfg, fresh, hasFresh)
	return r, nil
}

// renewAfter is how long after a read the set is read again: half of
// Refresh, so that a failed read is tried again before the set expires;
// sooner when the provider says its document is fresh for less
// (Cache-Control), never sooner than MinRefresh. A longer max-age does
// not lengthen it: Refresh is the operator's bound on how long a removed
// key may verify.
func renewAfter(cfg config.JWKS, fresh time.Duration, hasFresh bool) time.Duration {
	d := cfg.Refresh / 2
	if hasFresh && fresh < d {
		d = fresh
	}
	return max(d, cfg.MinRefresh)
}

// freshness is how long a response says it stays fresh (RFC 9111 §4.2.1
// for a private cache): Cache-Control max-age less Age, zero for no-cache
// or no-store; ok is false when it says nothing.
func freshness(h http.Header) (d time.Duration, ok bool) {
	const most = int64(365 * 24 * 3600) // a year; no overflow below
	var maxAge int64 = -1
	for _, v := range h.Values("Cache-Control") {
		for dir := range strings.SplitSeq(v, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(dir), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "no-cache", "no-store":
				return 0, true
			case "max-age":
				n, err := strconv.ParseInt(strings.Trim(strings.TrimSpace(val), `"`), 10, 64)
				if errors.Is(err, strconv.ErrRange) && n > 0 {
					// RFC 9111 §1.2.2: too large to represent is "the
					// greatest positive integer", not invalid.
					n, err = most, nil
				}
				if err != nil || n < 0 {
					// RFC 9111 §4.2.1: an invalid freshness is stale.
					return 0, true
				}
				if maxAge < 0 || n < maxAge {
					maxAge = n // several: the shortest
				}
			}
		}
	}
	if maxAge < 0 {
		return 0, false
	}
	maxAge = min(maxAge, most)
	if age, err := strconv.ParseInt(strings.TrimSpace(h.Get("Age")), 10, 64); err == nil && age > 0 {
		maxAge -= min(age, most)
	}
	return time.Duration(max(maxAge, 0)) * time.Second, true
}

// rawJWK is a key as RFC 7517/7518 write it.
type rawJWK struct {
	Kty    string   `json:"kty"`
	Kid    *string  `json:"kid"`
	Alg    string   `json:"alg"`
	Use    string   `json:"use"`
	KeyOps []string `json:"key_ops"`
	N      string   `json:"n"`
	E      string   `json:"e"`
	Crv    string   `json:"crv"`
	X      string   `json:"x"`
	Y      string   `json:"y"`
}

// parseJWKS reads a key set. A key orderly cannot or will not verify with
// (an encryption key, an HMAC secret, a short RSA key, an algorithm other
// than its type's) is left out and said so in skipped; a set with no key
// left, two keys under one kid, or not a JWKS at all is an error.
func parseJWKS(data []byte) (set *keySet, skipped []string, err error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, nil, fmt.Errorf("not a JSON Web Key Set: %w", err)
	}
	if len(doc.Keys) > maxJWKSKeys {
		return nil, nil, fmt.Errorf("the key set has %d keys, more than %d", len(doc.Keys), maxJWKSKeys)
	}
	set = &keySet{}
	kids := map[string]bool{}
	for i, raw := range doc.Keys {
		var r rawJWK
		if err := json.Unmarshal(raw, &r); err != nil {
			skipped = append(skipped, fmt.Sprintf("keys[%d]: %v", i, err))
			continue
		}
		kid := ""
		if r.Kid != nil {
			kid = *r.Kid
			if kid == "" {
				return nil, skipped, fmt.Errorf("keys[%d]: kid is empty", i)
			}
			// Two keys under one kid: which one a token means is not
			// for orderly to guess.
			if kids[kid] {
				return nil, skipped, fmt.Errorf("two keys have kid %q", kid)
			}
			kids[kid] = true
		}
		k, err := parseJWK(r)
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("keys[%d] (kid %q): %v", i, kid, err))
			continue
		}
		k.kid = kid
		set.keys = append(set.keys, k)
	}
	if len(set.keys) == 0 {
		return nil, skipped, errors.New("the key set has no key orderly verifies with (RSA of 2048 bits or more, EC P-256/384/521 or Ed25519, for signatures)")
	}
	return set, skipped, nil
}

// parseJWK pins a key to one algorithm: its alg when given (which must
// suit its type), else its type's usual one.
func parseJWK(r rawJWK) (jwk, error) {
	if r.Use != "" && r.Use != "sig" {
		return jwk{}, fmt.Errorf("use %q is not sig", r.Use)
	}
	if r.KeyOps != nil && !slices.Contains(r.KeyOps, "verify") {
		return jwk{}, errors.New("key_ops does not allow verify")
	}
	if r.Alg != "" && !slices.Contains(jwksAlgorithms, r.Alg) {
		return jwk{}, fmt.Errorf("alg %q is not one orderly verifies from a key set (%v)", r.Alg, jwksAlgorithms)
	}
	switch r.Kty {
	case "RSA":
		alg := r.Alg
		if alg == "" {
			alg = "RS256"
		}
		if alg[:2] != "RS" && alg[:2] != "PS" {
			return jwk{}, fmt.Errorf("alg %s is not an RSA algorithm", alg)
		}
		n, err := b64int(r.N)
		if err != nil {
			return jwk{}, fmt.Errorf("n: %w", err)
		}
		e, err := b64int(r.E)
		if err != nil {
			return jwk{}, fmt.Errorf("e: %w", err)
		}
		if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 || e.Bit(0) == 0 {
			return jwk{}, errors.New("e is not a usable RSA exponent")
		}
		if n.BitLen() < minRSABits {
			return jwk{}, fmt.Errorf("RSA key has %d bits, need at least %d", n.BitLen(), minRSABits)
		}
		return jwk{alg: alg, key: &rsa.PublicKey{N: n, E: int(e.Int64())}}, nil
	case "EC":
		var curve elliptic.Curve
		var alg string
		switch r.Crv {
		case "P-256":
			curve, alg = elliptic.P256(), "ES256"
		case "P-384":
			curve, alg = elliptic.P384(), "ES384"
		case "P-521":
			curve, alg = elliptic.P521(), "ES512"
		default:
			return jwk{}, fmt.Errorf("curve %q is not supported", r.Crv)
		}
		if r.Alg != "" && r.Alg != alg {
			return jwk{}, fmt.Errorf("alg %s does not go with curve %s (%s)", r.Alg, r.Crv, alg)
		}
		size := (curve.Params().BitSize + 7) / 8
		x, errX := base64.RawURLEncoding.DecodeString(r.X)
		y, errY := base64.RawURLEncoding.DecodeString(r.Y)
		if errX != nil || errY != nil || len(x) != size || len(y) != size {
			return jwk{}, fmt.Errorf("x and y must be %d bytes each, base64url", size)
		}
		point := append(append([]byte{4}, x...), y...)
		key, err := ecdsa.ParseUncompressedPublicKey(curve, point)
		if err != nil {
			return jwk{}, fmt.Errorf("not a point of %s: %w", r.Crv, err)
		}
		return jwk{alg: alg, key: key}, nil
	case "OKP":
		if r.Crv != "Ed25519" {
			return jwk{}, fmt.Errorf("curve %q is not supported (Ed25519)", r.Crv)
		}
		alg := r.Alg
		if alg == "" {
			alg = "EdDSA"
		}
		if alg != "EdDSA" && alg != algEd25519 {
			return jwk{}, fmt.Errorf("alg %s does not go with Ed25519 (EdDSA or Ed25519)", r.Alg)
		}
		x, err := base64.RawURLEncoding.DecodeString(r.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return jwk{}, errors.New("x must be an Ed25519 public key (32 bytes, base64url)")
		}
		return jwk{alg: alg, key: ed25519.PublicKey(x)}, nil
	case "oct":
		return jwk{}, errors.New("a symmetric (oct) key is never taken from a key set: a published secret is no secret")
	}
	return jwk{}, fmt.Errorf("kty %q is not supported", r.Kty)
}

// b64int decodes a base64url big-endian unsigned integer.
func b64int(s string) (*big.Int, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) == 0 {
		return nil, errors.New("not base64url")
	}
	return new(big.Int).SetBytes(b), nil
}

// jwksKeyFunc hands out the key a token names, and only for the one
// algorithm that key is pinned to: the token's header chooses which key,
// never what the key is used as.
func (v *jwtVerifier) jwksKeyFunc(t *jwt.Token) (any, error) {
	if t.Method == nil {
		return nil, errors.New("unexpected signing method")
	}
	alg := t.Method.Alg()
	if !slices.Contains(jwksAlgorithms, alg) {
		return nil, errors.New("unexpected signing method")
	}
	var kid string
	rawKid, hasKid := t.Header["kid"]
	if hasKid {
		var ok bool
		if kid, ok = rawKid.(string); !ok {
			return nil, errKidNotText
		}
	}
	set, err := v.jwks.current(false)
	if err != nil {
		return nil, err
	}
	k, err := set.find(kid, hasKid, alg)
	if errors.Is(err, errUnknownKid) {
		// Perhaps the issuer rotated: read the set again (MinRefresh
		// bounds how often a made-up kid can make that happen).
		if set, err = v.jwks.current(true); err != nil {
			return nil, err
		}
		k, err = set.find(kid, hasKid, alg)
	}
	if err != nil {
		return nil, err
	}
	if !sameAlg(k.alg, alg) {
		return nil, fmt.Errorf("the key %q verifies %s, not %s", k.kid, k.alg, alg)
	}
	return k.key, nil
}
