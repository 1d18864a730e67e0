package auth

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/orderly-run/orderly/internal/config"
)

// MaxHeaderBytes caps the Authorization header this package will look at,
// so an oversized value is refused before any hashing or JSON decoding.
const MaxHeaderBytes = 8 << 10

// Authenticator verifies bearer credentials: static tokens (by hash) and,
// when configured, JWTs. It is safe for concurrent use; AddToken may run
// while requests are being authenticated.
type Authenticator struct {
	jwt *jwtVerifier // nil when JWT is disabled

	mu     sync.RWMutex
	tokens []tokenEntry
}

// New returns an Authenticator for cfg. now is the clock for JWT exp/nbf
// checks (time.Now when nil), injected so tests need not wait for expiry.
// Invalid config (a hash that is not 64 hex characters, a duplicate hash,
// an unknown JWT algorithm, a missing or wrong-typed key) is an error,
// because a credential that silently never works is a security bug too.
func New(cfg config.Auth, now func() time.Time) (*Authenticator, error) {
	return NewWith(cfg, Options{Now: now})
}

// Options are New's settings beyond the config.
type Options struct {
	// Now is the clock for JWT exp/nbf checks and key set refreshes
	// (time.Now when nil).
	Now func() time.Time
	// Previous is the authenticator this one replaces (a reload, changed
	// runtime tokens): its JWT key set is kept when auth.jwt.jwks is the
	// same, instead of being read again.
	Previous *Authenticator
	// Logger gets a key set's failed refreshes and left-out keys.
	Logger *slog.Logger
	// OnJWKSRefresh is called after each refresh of the key set, with
	// its error (nil when it was read), for metrics.
	OnJWKSRefresh func(error)
}

// NewWith is New with Options.
func NewWith(cfg config.Auth, o Options) (*Authenticator, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	v, err := newJWTVerifier(cfg.JWT, o)
	if err != nil {
		return nil, err
	}
	a := &Authenticator{jwt: v}
	for i, t := range cfg.Tokens {
		if err := a.AddToken(t.Name, t.SHA256, t.Roles); err != nil {
			return nil, fmt.Errorf("auth.tokens[%d]: %w", i, err)
		}
		if t.PreviousSHA256 == "" {
			continue
		}
		if err := a.add(t.Name, t.PreviousSHA256, t.Roles, true); err != nil {
			return nil, fmt.Errorf("auth.tokens[%d].previous_sha256: %w", i, err)
		}
	}
	return a, nil
}

// AddToken registers a static token by its hex SHA-256 at runtime, e.g. the
// admin token serve generates and keeps in PostgreSQL. Registering the same
// hash again under the same name replaces its roles; under another name it
// is an error, since one token must identify exactly one principal.
func (a *Authenticator) AddToken(name, sha256hex string, roles []string) error {
	return a.add(name, sha256hex, roles, false)
}

// add registers a token; previous marks the token a rotation replaces
// (auth.tokens[].previous_sha256), the one other hash its name may have.
func (a *Authenticator) add(name, sha256hex string, roles []string, previous bool) error {
	if name == "" {
		return errors.New("token name is required")
	}
	if !ValidName(name) {
		return fmt.Errorf("token name %q is too long or has control characters", name)
	}
	if strings.HasPrefix(name, JWTPrefix) {
		return fmt.Errorf("token name %q: names starting with %q are JWT principals", name, JWTPrefix)
	}
	for _, r := range roles {
		if r == "" || !ValidName(r) {
			return fmt.Errorf("token %s: role %q is empty, too long or has control characters", name, r)
		}
	}
	h, err := parseHash(strings.ToLower(sha256hex))
	if err != nil {
		return fmt.Errorf("token %s: %w", name, err)
	}
	e := tokenEntry{name: name, hash: h, roles: slices.Clone(roles), previous: previous}

	a.mu.Lock()
	defer a.mu.Unlock()
	for i := range a.tokens {
		if a.tokens[i].name == name && a.tokens[i].hash != h && !previous && !a.tokens[i].previous {
			// A principal is its name: two tokens under one name would
			// share its orders and its policy rules. The one exception is
			// a rotation's previous token, which is the same client's.
			return fmt.Errorf("token %s: another token already has this name; rename one of them", name)
		}
		if a.tokens[i].hash != h {
			continue
		}
		if a.tokens[i].name != name {
			return fmt.Errorf("token %s: the same hash is already registered as %s", name, a.tokens[i].name)
		}
		if previous != a.tokens[i].previous {
			return fmt.Errorf("token %s: previous_sha256 is its sha256 (the previous token is the one being replaced)", name)
		}
		a.tokens[i] = e
		return nil
	}
	a.tokens = append(a.tokens, e)
	return nil
}

// Authenticate verifies the raw Authorization header value and returns the
// principal it proves. Every failure is an *order.Error with
// CodeUnauthenticated whose message never contains the credential.
func (a *Authenticator) Authenticate(header string) (Principal, error) {
	if header == "" {
		return Principal{}, unauthenticated("missing Authorization header", nil)
	}
	if len(header) > MaxHeaderBytes {
		return Principal{}, unauthenticated("Authorization header too large", nil)
	}
	scheme, cred, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return Principal{}, unauthenticated("authorization scheme must be Bearer", nil)
	}
	cred = strings.Trim(cred, " ")
	if !validBearer(cred) {
		return Principal{}, unauthenticated("malformed bearer token", nil)
	}
	// A JWT has exactly two dots; static tokens have none. Only a configured
	// JWT verifier sees JWTs, and it alone decides them, so a JWT is never
	// also tried as a static token (and vice versa).
	if a.jwt != nil && strings.Count(cred, ".") == 2 {
		return a.jwt.verify(cred)
	}
	return a.staticToken(cred)
}

// staticToken looks the token up by hash among all registered tokens.
func (a *Authenticator) staticToken(token string) (Principal, error) {
	sum := sha256.Sum256([]byte(token))
	a.mu.RLock()
	defer a.mu.RUnlock()
	i := findHash(a.tokens, sum)
	if i < 0 {
		return Principal{}, unauthenticated("invalid token", nil)
	}
	e := a.tokens[i]
	return Principal{Name: e.name, Roles: slices.Clone(e.roles), Kind: KindToken}, nil
}

// validBearer reports whether s is an RFC 6750 b64token: base64/base64url
// characters plus "-._~+/", then optional "=" padding. Anything else (spaces,
// quotes, control bytes, non-ASCII) is refused before it reaches a parser.
func validBearer(s string) bool {
	if s == "" {
		return false
	}
	body := strings.TrimRight(s, "=")
	if body == "" {
		return false
	}
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '.', c == '_', c == '~', c == '+', c == '/':
		default:
			return false
		}
	}
	return true
}
