package auth

import (
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
)

// Key-strength floors: a JWT is only as strong as its key, and a short
// HMAC secret can be brute-forced offline from any one token.
const (
	minHMACSecretBytes = 32 // RFC 7518 §3.2: at least the hash size
	minRSABits         = 2048
	maxNameBytes       = 256
)

// jwtVerifier checks JSON Web Tokens against exactly one algorithm and key.
type jwtVerifier struct {
	parser      *jwt.Parser
	method      jwt.SigningMethod
	key         any
	previous    any         // during a key rotation, the key before key; else nil
	jwks        *jwksSource // auth.jwt.jwks: the keys instead of method, key, previous
	nameClaim   string
	rolesClaim  string
	now         func() time.Time
	leeway      time.Duration
	maxLifetime time.Duration
}

// DefaultMaxLifetime bounds a token's lifetime when the config leaves
// auth.jwt.max_lifetime zero (config.Default has the same).
const DefaultMaxLifetime = 24 * time.Hour

// newJWTVerifier builds the verifier cfg describes, or returns nil when JWT
// is disabled (no algorithm). Every setting that would weaken validation
// (a short secret, a key of the wrong type, both a secret and a key) is an
// error rather than a guess.
func newJWTVerifier(cfg config.JWT, o Options) (*jwtVerifier, error) {
	now := o.Now
	if cfg.JWKS.Set() && (cfg.Algorithm != "" || cfg.Secret != "" || cfg.PublicKey != "" || cfg.PreviousSecret != "" || cfg.PreviousPublicKey != "") {
		return nil, errors.New("auth.jwt.jwks replaces auth.jwt.algorithm and its keys: set one or the other")
	}
	if cfg.Algorithm == "" && !cfg.JWKS.Set() {
		if cfg.Secret != "" || cfg.PublicKey != "" || cfg.PreviousSecret != "" || cfg.PreviousPublicKey != "" {
			return nil, errors.New("auth.jwt: a secret or public key set but no algorithm")
		}
		return nil, nil
	}
	if cfg.Leeway < 0 {
		return nil, errors.New("auth.jwt.leeway must not be negative")
	}
	if cfg.Leeway > config.MaxJWTLeeway {
		return nil, fmt.Errorf("auth.jwt.leeway must be at most %s", config.MaxJWTLeeway)
	}
	if cfg.MaxLifetime < 0 {
		return nil, errors.New("auth.jwt.max_lifetime must not be negative")
	}
	v := &jwtVerifier{nameClaim: cfg.NameClaim, rolesClaim: cfg.RolesClaim,
		now: now, leeway: cfg.Leeway, maxLifetime: cfg.MaxLifetime}
	if v.maxLifetime == 0 {
		v.maxLifetime = DefaultMaxLifetime
	}
	if v.nameClaim == "" {
		v.nameClaim = "sub"
	}
	if v.rolesClaim == "" {
		v.rolesClaim = "roles"
	}
	opts := []jwt.ParserOption{
		jwt.WithExpirationRequired(),
		// iat, when present, is a number and not in the future (beyond
		// the leeway): the parser ignores it otherwise.
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(now),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.JWKS.Set() {
		if strings.TrimSpace(cfg.Audience) == "" {
			return nil, errors.New("auth.jwt.audience must be set with auth.jwt.jwks")
		}
		registerEd25519()
		// A rebuilt authenticator (a reload, runtime tokens changed)
		// keeps the set read before when the settings are the same.
		if o.Previous != nil && o.Previous.jwt != nil && o.Previous.jwt.jwks.sameSource(cfg.JWKS) {
			v.jwks = o.Previous.jwt.jwks
		} else {
			src, err := newJWKSSource(cfg.JWKS, o)
			if err != nil {
				return nil, err
			}
			v.jwks = src
		}
		v.parser = jwt.NewParser(append(opts, jwt.WithValidMethods(jwksAlgorithms))...)
		return v, nil
	}
	var err error
	v.method, v.key, err = jwtKey(cfg.Algorithm, string(cfg.Secret), cfg.PublicKey, "")
	if err != nil {
		return nil, err
	}
	if cfg.PreviousSecret != "" || cfg.PreviousPublicKey != "" {
		// Rotation: the key tokens were signed with until now, accepted
		// until the operator removes it. Same algorithm, same checks.
		_, v.previous, err = jwtKey(cfg.Algorithm, string(cfg.PreviousSecret), cfg.PreviousPublicKey, "previous_")
		if err != nil {
			return nil, err
		}
		if sameKey(v.key, v.previous) {
			return nil, errors.New("auth.jwt: the previous key is the current one; remove previous_secret or previous_public_key, or set the new key")
		}
	}

	methods := []string{v.method.Alg()}
	if _, ok := v.key.(ed25519.PublicKey); ok {
		// "EdDSA" and RFC 9864's "Ed25519" are one algorithm with an
		// Ed25519 key, whichever of the two the config names: a key set
		// decides the same (sameAlg).
		registerEd25519()
		methods = []string{"EdDSA", algEd25519}
	}
	v.parser = jwt.NewParser(append(opts, jwt.WithValidMethods(methods))...)
	return v, nil
}

// jwtKey loads the key alg verifies with from secret (HS256) or the PEM
// file publicKey (RS256, EdDSA or Ed25519); prefix names which of the key pairs of
// settings it is ("" or "previous_") in errors.
func jwtKey(alg, secret, publicKey, prefix string) (jwt.SigningMethod, any, error) {
	secretKey, publicKeyKey := "auth.jwt."+prefix+"secret", "auth.jwt."+prefix+"public_key"
	if strings.EqualFold(alg, "HS256") {
		if publicKey != "" {
			return nil, nil, fmt.Errorf("%s is not used with HS256; set only %s", publicKeyKey, secretKey)
		}
		if len(secret) < minHMACSecretBytes {
			return nil, nil, fmt.Errorf("%s must be at least %d bytes for HS256", secretKey, minHMACSecretBytes)
		}
		return jwt.SigningMethodHS256, []byte(secret), nil
	}
	if !strings.EqualFold(alg, "RS256") && !strings.EqualFold(alg, "EdDSA") && !strings.EqualFold(alg, algEd25519) {
		return nil, nil, fmt.Errorf("auth.jwt.algorithm %q is not supported (HS256, RS256, EdDSA or Ed25519)", alg)
	}
	if secret != "" {
		return nil, nil, fmt.Errorf("%s is not used with %s; set only %s", secretKey, alg, publicKeyKey)
	}
	if publicKey == "" {
		return nil, nil, fmt.Errorf("%s is required for %s", publicKeyKey, alg)
	}
	// One of the two things this package reads (the other is a key
	// set, jwks.go), because a key path is what operators put in config.
	pemBytes, err := os.ReadFile(publicKey)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", publicKeyKey, err)
	}
	if strings.EqualFold(alg, "RS256") {
		key, err := jwt.ParseRSAPublicKeyFromPEM(pemBytes)
		if err != nil {
			return nil, nil, fmt.Errorf("%s %s: not an RSA public key: %w", publicKeyKey, publicKey, err)
		}
		if key.N.BitLen() < minRSABits {
			return nil, nil, fmt.Errorf("%s %s: RSA key has %d bits, need at least %d", publicKeyKey, publicKey, key.N.BitLen(), minRSABits)
		}
		return jwt.SigningMethodRS256, key, nil
	}
	key, err := jwt.ParseEdPublicKeyFromPEM(pemBytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: not an Ed25519 public key: %w", publicKeyKey, publicKey, err)
	}
	return jwt.SigningMethodEdDSA, key, nil
}

// sameKey reports whether two verification keys are one.
func sameKey(a, b any) bool {
	switch a := a.(type) {
	case []byte:
		b, ok := b.([]byte)
		return ok && subtle.ConstantTimeCompare(a, b) == 1
	case *rsa.PublicKey:
		return a.Equal(b)
	case ed25519.PublicKey:
		return a.Equal(b)
	}
	return false
}

// keyFunc hands out key only for the pinned algorithm (with an Ed25519
// key, under either of its names; see sameAlg). The parser already
// rejects other algorithms (WithValidMethods); checking again here means
// an HS256 token can never be verified with the RSA public key bytes as
// its HMAC secret, whatever the parser options become.
func (v *jwtVerifier) keyFunc(key any) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		if t.Method == nil || !sameAlg(v.method.Alg(), t.Method.Alg()) {
			return nil, errors.New("unexpected signing method")
		}
		switch key.(type) {
		case []byte, *rsa.PublicKey, ed25519.PublicKey:
			return key, nil
		}
		return nil, errors.New("no key for signing method")
	}
}

// verify validates a compact JWT and returns its principal. Every failure
// is an *order.Error with CodeUnauthenticated whose message names the kind
// of problem but never echoes the token or its claims.
func (v *jwtVerifier) verify(raw string) (Principal, error) {
	claims := jwt.MapClaims{}
	var tok *jwt.Token
	var err error
	if v.jwks != nil {
		tok, err = v.parser.ParseWithClaims(raw, claims, v.jwksKeyFunc)
	} else {
		tok, err = v.parser.ParseWithClaims(raw, claims, v.keyFunc(v.key))
	}
	if v.previous != nil && errors.Is(err, jwt.ErrTokenSignatureInvalid) {
		// Not the current key's: perhaps signed before a rotation. The
		// claims are judged as they would have been (the parser checks
		// them only after the signature).
		claims = jwt.MapClaims{}
		tok, err = v.parser.ParseWithClaims(raw, claims, v.keyFunc(v.previous))
	}
	if err != nil {
		return Principal{}, unauthenticated(jwtMessage(err), err)
	}
	// RFC 7515 §4.1.11: a token naming extensions in "crit" must be refused
	// by a recipient that does not understand them, and we understand none;
	// the parser does not look at the header.
	if _, ok := tok.Header["crit"]; ok {
		return Principal{}, unauthenticated("token has critical header extensions this server does not support", nil)
	}
	if err := v.checkLifetime(claims); err != nil {
		return Principal{}, err
	}
	name, err := claimName(claims, v.nameClaim)
	if err != nil {
		return Principal{}, unauthenticated("token has no usable "+v.nameClaim+" claim", err)
	}
	roles, err := claimRoles(claims, v.rolesClaim)
	if err != nil {
		return Principal{}, unauthenticated("token has an invalid "+v.rolesClaim+" claim", err)
	}
	return Principal{Name: JWTPrefix + name, Roles: roles, Kind: KindJWT, Claims: claimValues(claims)}, nil
}

// checkLifetime refuses a token that lives longer than auth.jwt.max_lifetime:
// one whose exp is further than that from its iat or its nbf (what its
// issuer granted), or from now (what is left of it: a token without iat
// is judged by this alone). A stolen long-lived token is then no better
// than a short one, whatever the issuer was configured to mint. The parser
// has checked that exp is present and that each time is a number.
func (v *jwtVerifier) checkLifetime(claims jwt.MapClaims) error {
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return unauthenticated("token lacks a required claim (exp, iss or aud)", err)
	}
	tooLong := unauthenticated(fmt.Sprintf("token lifetime exceeds the %s this server accepts (auth.jwt.max_lifetime)", v.maxLifetime), nil)
	if exp.Sub(v.now()) > v.maxLifetime+v.leeway {
		return tooLong
	}
	for _, get := range []func() (*jwt.NumericDate, error){claims.GetIssuedAt, claims.GetNotBefore} {
		start, err := get()
		if err != nil {
			return unauthenticated("invalid token", err)
		}
		if start != nil && exp.Sub(start.Time) > v.maxLifetime {
			return tooLong
		}
	}
	return nil
}

// jwtMessage tells a client what to fix (refresh an expired token, check
// the audience) without detail an attacker could probe with.
func jwtMessage(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token not yet valid"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token issued in the future (check the clocks)"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "token lacks a required claim (exp, iss or aud)"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "token issuer not accepted"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "token audience not accepted"
	}
	// A key set's lookup says what is wrong with the key a token names,
	// not whether its signature would have held.
	for _, e := range []error{errUnknownKid, errKidRequired, errNoKeyForAlg, errKidNotText, errKeySetExpired} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return "invalid token"
}

// claimName returns the principal name: a non-empty string without control
// characters, since it ends up in logs, history and policy decisions.
func claimName(claims jwt.MapClaims, claim string) (string, error) {
	s, ok := claims[claim].(string)
	if !ok || s == "" {
		return "", fmt.Errorf("claim %q missing or not a string", claim)
	}
	if !ValidName(s) {
		return "", fmt.Errorf("claim %q is too long or has control characters", claim)
	}
	return s, nil
}

// claimRoles accepts the two shapes identity providers use for roles: a
// JSON array of strings or one space-separated string (OAuth "scope"
// style). A missing claim means no roles; any other shape is an error, so a
// misconfigured issuer is noticed instead of silently granting nothing.
func claimRoles(claims jwt.MapClaims, claim string) ([]string, error) {
	raw, ok := claims[claim]
	if !ok || raw == nil {
		return nil, nil
	}
	var roles []string
	switch r := raw.(type) {
	case string:
		roles = strings.Fields(r)
	case []any:
		roles = make([]string, 0, len(r))
		for _, e := range r {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("claim %q has a non-string element", claim)
			}
			roles = append(roles, s)
		}
	default:
		return nil, fmt.Errorf("claim %q is neither a string nor an array of strings", claim)
	}
	for _, s := range roles {
		if s == "" || !ValidName(s) {
			return nil, fmt.Errorf("claim %q has an empty, overlong or non-printable role", claim)
		}
	}
	return roles, nil
}

// ValidName reports whether s is short, valid UTF-8 and free of control
// characters: safe to log, to store and to compare with names in policy
// rules. A principal's name and roles are such names, whoever issued them.
func ValidName(s string) bool {
	if len(s) > maxNameBytes || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

// unauthenticated is the one error shape this package returns to callers.
func unauthenticated(msg string, cause error) *order.Error {
	return &order.Error{Code: order.CodeUnauthenticated, Message: msg, Err: cause}
}
