package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/orderly-run/orderly/internal/config"
)

// testNow is the fixed clock every JWT test runs at.
func testNow() time.Time { return time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC) }

func sign(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", m.Alg(), err)
	}
	return s
}

// signHeader signs the RS256 test claims with extra header parameters.
func signHeader(t *testing.T, key any, header map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims(nil))
	for k, v := range header {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rawJWT assembles a token from literal header and payload JSON and a
// signature segment, for shapes no signing library would produce.
func rawJWT(header, payload, sig string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(header)) + "." + enc([]byte(payload)) + "." + sig
}

// claims returns a valid claim set for the RS256 test config, with changes
// applied (a nil value deletes the claim).
func claims(changes map[string]any) jwt.MapClaims {
	c := jwt.MapClaims{
		"sub":   "alice",
		"iss":   "https://idp.example",
		"aud":   "orderly",
		"exp":   testNow().Add(time.Hour).Unix(),
		"iat":   testNow().Add(-time.Minute).Unix(),
		"roles": []string{"ops", "monitor"},
	}
	for k, v := range changes {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func TestJWTRS256(t *testing.T) {
	key := rsaKey(t, 2048)
	other := rsaKey(t, 2048)
	pubPath, pubPEM := writePEM(t, &key.PublicKey)
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	staticTok, staticHash := NewToken()

	a, err := New(config.Auth{
		Tokens: []config.Token{{Name: "robot", SHA256: staticHash}},
		JWT: config.JWT{
			Algorithm: "RS256", PublicKey: pubPath,
			Issuer: "https://idp.example", Audience: "orderly",
			Leeway: 30 * time.Second, RolesClaim: "roles", NameClaim: "sub",
		},
	}, testNow)
	if err != nil {
		t.Fatal(err)
	}

	good := sign(t, jwt.SigningMethodRS256, key, claims(nil))
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"root","exp":1999999999,"iss":"https://idp.example","aud":"orderly"}`)) + "." + parts[2]
	noneTok := func() string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims(nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	payload, _ := json.Marshal(claims(nil))
	big := claims(map[string]any{"pad": strings.Repeat("x", MaxHeaderBytes)})

	tests := []struct {
		name    string
		token   string
		want    *Principal // nil: expect 401
		wantMsg string     // substring of the 401 message, when it matters
	}{
		{"valid", good, &Principal{Name: "jwt:alice", Roles: []string{"ops", "monitor"}, Kind: KindJWT}, ""},
		{"roles as space-separated string", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"roles": "ops  admin"})),
			&Principal{Name: "jwt:alice", Roles: []string{"ops", "admin"}, Kind: KindJWT}, ""},
		{"no roles claim", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"roles": nil})),
			&Principal{Name: "jwt:alice", Kind: KindJWT}, ""},
		{"aud array containing ours", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"aud": []string{"other", "orderly"}})),
			&Principal{Name: "jwt:alice", Roles: []string{"ops", "monitor"}, Kind: KindJWT}, ""},
		{"expired within leeway", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"exp": testNow().Add(-10 * time.Second).Unix()})),
			&Principal{Name: "jwt:alice", Roles: []string{"ops", "monitor"}, Kind: KindJWT}, ""},
		{"nbf within leeway", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"nbf": testNow().Add(10 * time.Second).Unix()})),
			&Principal{Name: "jwt:alice", Roles: []string{"ops", "monitor"}, Kind: KindJWT}, ""},
		{"iat within leeway", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"iat": testNow().Add(10 * time.Second).Unix()})),
			&Principal{Name: "jwt:alice", Roles: []string{"ops", "monitor"}, Kind: KindJWT}, ""},
		{"lifetime exactly 24h", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"iat": testNow().Add(-time.Hour).Unix(), "nbf": testNow().Add(-time.Hour).Unix(), "exp": testNow().Add(23 * time.Hour).Unix()})),
			&Principal{Name: "jwt:alice", Roles: []string{"ops", "monitor"}, Kind: KindJWT}, ""},
		{"no iat, exp 24h out", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"iat": nil, "exp": testNow().Add(24 * time.Hour).Unix()})),
			&Principal{Name: "jwt:alice", Roles: []string{"ops", "monitor"}, Kind: KindJWT}, ""},
		{"static token still works", staticTok, &Principal{Name: "robot", Kind: KindToken}, ""},
		// Item 11 of issue 7: a JWT naming a static token's principal is
		// another principal.
		{"sub naming a static token", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"sub": "robot"})),
			&Principal{Name: "jwt:robot", Roles: []string{"ops", "monitor"}, Kind: KindJWT}, ""},

		// RFC 7515 §4.1.11: critical extensions we do not understand.
		{"crit naming an unknown extension", signHeader(t, key, map[string]any{"crit": []string{"x-unknown"}, "x-unknown": true}), nil, "critical header"},
		{"crit empty", signHeader(t, key, map[string]any{"crit": []string{}}), nil, "critical header"},

		// Algorithm attacks.
		{"alg none via library", noneTok, nil, "invalid token"},
		{"alg none hand-made", rawJWT(`{"alg":"none","typ":"JWT"}`, string(payload), ""), nil, "invalid token"},
		{"alg NONE hand-made", rawJWT(`{"alg":"NONE"}`, string(payload), ""), nil, "invalid token"},
		{"HS256 with public key PEM as secret", sign(t, jwt.SigningMethodHS256, pubPEM, claims(nil)), nil, "invalid token"},
		{"HS256 with public key DER as secret", sign(t, jwt.SigningMethodHS256, pubDER, claims(nil)), nil, "invalid token"},
		{"RS384 with the right key", sign(t, jwt.SigningMethodRS384, key, claims(nil)), nil, "invalid token"},
		{"PS256 with the right key", sign(t, jwt.SigningMethodPS256, key, claims(nil)), nil, "invalid token"},
		{"EdDSA token", sign(t, jwt.SigningMethodEdDSA, edPriv, claims(nil)), nil, "invalid token"},
		{"RS256 signed by another key", sign(t, jwt.SigningMethodRS256, other, claims(nil)), nil, "invalid token"},
		{"tampered payload", tampered, nil, "invalid token"},
		{"signature stripped", parts[0] + "." + parts[1] + ".", nil, "invalid token"},

		// Claim checks.
		{"expired", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"exp": testNow().Add(-time.Hour).Unix()})), nil, "expired"},
		{"not yet valid", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"nbf": testNow().Add(time.Hour).Unix()})), nil, "not yet valid"},
		// Issued in the future: a clock that is wrong, or a token made to
		// look fresh (PyJWT, stage0's library, refuses it too).
		{"issued in the future", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"iat": testNow().Add(time.Hour).Unix()})), nil, "issued in the future"},
		{"iat not a number", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"iat": "yesterday"})), nil, "invalid token"},
		{"no exp", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"exp": nil})), nil, "required claim"},
		{"exp not a number", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"exp": "tomorrow"})), nil, "invalid token"},
		// Lifetime (auth.jwt.max_lifetime, 24h by default): measured from
		// iat, from nbf, and from now, so no field left out widens it.
		{"exp ten years after iat", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"exp": testNow().AddDate(10, 0, 0).Unix()})), nil, "lifetime"},
		{"exp ten years out, no iat", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"iat": nil, "exp": testNow().AddDate(10, 0, 0).Unix()})), nil, "lifetime"},
		{"exp 25h out, no iat", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"iat": nil, "exp": testNow().Add(25 * time.Hour).Unix()})), nil, "lifetime"},
		{"iat a year ago, exp in an hour", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"iat": testNow().AddDate(-1, 0, 0).Unix()})), nil, "lifetime"},
		{"nbf a year ago, exp in an hour", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"nbf": testNow().AddDate(-1, 0, 0).Unix()})), nil, "lifetime"},
		{"nbf a year ago, no iat", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"iat": nil, "nbf": testNow().AddDate(-1, 0, 0).Unix()})), nil, "lifetime"},
		{"nbf not a number", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"nbf": "yesterday"})), nil, "invalid token"},
		{"wrong issuer", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"iss": "https://evil.example"})), nil, "issuer"},
		{"no issuer", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"iss": nil})), nil, "required claim"},
		{"wrong audience", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"aud": "other"})), nil, "audience"},
		{"no audience", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"aud": nil})), nil, "required claim"},
		{"no sub", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"sub": nil})), nil, "sub"},
		{"sub not a string", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"sub": 42})), nil, "sub"},
		{"sub with newline", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"sub": "alice\nadmin"})), nil, "sub"},
		{"roles a number", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"roles": 7})), nil, "roles"},
		{"roles with a non-string", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"roles": []any{"ops", 1}})), nil, "roles"},
		{"roles with an empty string", sign(t, jwt.SigningMethodRS256, key, claims(map[string]any{"roles": []string{""}})), nil, "roles"},

		// Malformed input.
		{"three empty segments", "..", nil, "malformed"},
		{"garbage segments", "a.b.c", nil, "invalid token"},
		{"header not JSON", rawJWT(`not json`, string(payload), parts[2]), nil, "invalid token"},
		{"payload not JSON", rawJWT(`{"alg":"RS256"}`, `[`, parts[2]), nil, "invalid token"},
		{"payload is an array", rawJWT(`{"alg":"RS256"}`, `[1,2]`, parts[2]), nil, "invalid token"},
		{"signature not base64", parts[0] + "." + parts[1] + ".!!!", nil, "malformed"},
		{"padding inside the token", parts[0] + "==." + parts[1] + "." + parts[2], nil, "malformed"},
		{"four segments", good + ".x", nil, "invalid token"},
		{"oversized", sign(t, jwt.SigningMethodRS256, key, big), nil, "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := a.Authenticate("Bearer " + tt.token)
			if tt.want == nil {
				wantUnauthenticated(t, err, tt.token)
				if tt.wantMsg != "" && !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			if p.Name != tt.want.Name || p.Kind != tt.want.Kind || !slices.Equal(p.Roles, tt.want.Roles) {
				t.Fatalf("principal = %+v, want %+v", p, *tt.want)
			}
		})
	}
}

func TestJWTHS256AndEdDSA(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	_, otherEd, _ := ed25519.GenerateKey(rand.Reader)
	edPath, edPEM := writePEM(t, edPub)
	rsa := rsaKey(t, 2048)
	clock := testNow

	hs, err := New(config.Auth{JWT: config.JWT{Algorithm: "HS256", Secret: config.Secret(secret), NameClaim: "email", RolesClaim: "groups"}}, clock)
	if err != nil {
		t.Fatal(err)
	}
	ed, err := New(config.Auth{JWT: config.JWT{Algorithm: "EdDSA", PublicKey: edPath}}, clock)
	if err != nil {
		t.Fatal(err)
	}
	exp := testNow().Add(time.Hour).Unix()

	tests := []struct {
		name  string
		a     *Authenticator
		token string
		want  *Principal
	}{
		{"HS256 valid, custom claims", hs, sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"email": "bob@example.com", "groups": []string{"ops"}, "exp": exp}),
			&Principal{Name: "jwt:bob@example.com", Roles: []string{"ops"}, Kind: KindJWT}},
		{"HS256 without name claim", hs, sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "bob", "exp": exp}), nil},
		{"HS256 wrong secret", hs, sign(t, jwt.SigningMethodHS256, []byte("fedcba9876543210fedcba9876543210"), jwt.MapClaims{"email": "bob", "exp": exp}), nil},
		{"HS384 with the right secret", hs, sign(t, jwt.SigningMethodHS384, secret, jwt.MapClaims{"email": "bob", "exp": exp}), nil},
		{"RS256 against HS256 config", hs, sign(t, jwt.SigningMethodRS256, rsa, jwt.MapClaims{"email": "bob", "exp": exp}), nil},
		{"HS256 without exp", hs, sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"email": "bob"}), nil},
		{"EdDSA valid, default claims", ed, sign(t, jwt.SigningMethodEdDSA, edPriv, jwt.MapClaims{"sub": "carol", "roles": "monitor", "exp": exp}),
			&Principal{Name: "jwt:carol", Roles: []string{"monitor"}, Kind: KindJWT}},
		{"EdDSA other key", ed, sign(t, jwt.SigningMethodEdDSA, otherEd, jwt.MapClaims{"sub": "carol", "exp": exp}), nil},
		{"HS256 with Ed25519 PEM as secret", ed, sign(t, jwt.SigningMethodHS256, edPEM, jwt.MapClaims{"sub": "carol", "exp": exp}), nil},
		{"HS256 with raw Ed25519 key as secret", ed, sign(t, jwt.SigningMethodHS256, []byte(edPub), jwt.MapClaims{"sub": "carol", "exp": exp}), nil},
		{"EdDSA expired", ed, sign(t, jwt.SigningMethodEdDSA, edPriv, jwt.MapClaims{"sub": "carol", "exp": testNow().Add(-time.Second).Unix()}), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tt.a.Authenticate("Bearer " + tt.token)
			if tt.want == nil {
				wantUnauthenticated(t, err, tt.token)
				return
			}
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			if p.Name != tt.want.Name || p.Kind != tt.want.Kind || !slices.Equal(p.Roles, tt.want.Roles) {
				t.Fatalf("principal = %+v, want %+v", p, *tt.want)
			}
		})
	}
}

// TestAuthenticateNeverPanics feeds hostile shapes through every verifier;
// a panic here would be a remote crash.
func TestAuthenticateNeverPanics(t *testing.T) {
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	edPath, _ := writePEM(t, edPub)
	a, err := New(config.Auth{JWT: config.JWT{Algorithm: "EdDSA", PublicKey: edPath}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	inputs := []string{
		"", " ", "Bearer", "Bearer .", "Bearer ..", "Bearer ...", "Bearer a..", "Bearer .a.",
		"Bearer " + rawJWT(`{}`, `{}`, ""),
		"Bearer " + rawJWT(`{"alg":null}`, `{}`, "AA"),
		"Bearer " + rawJWT(`{"alg":5}`, `{}`, "AA"),
		"Bearer " + rawJWT(`{"alg":"EdDSA"}`, `{"exp":1e400}`, "AA"),
		"Bearer " + rawJWT(`{"alg":"EdDSA"}`, `{"exp":-1}`, "AA"),
		"Bearer " + rawJWT(`{"alg":"EdDSA"}`, `null`, "AA"),
		"Bearer " + rawJWT(`{"alg":"EdDSA","kid":"../../etc/passwd"}`, `{"sub":"x","exp":9999999999}`, "AA"),
		"Bearer " + strings.Repeat(".", 1000),
		"Bearer " + strings.Repeat("A", MaxHeaderBytes-7),
	}
	for _, h := range inputs {
		if _, err := a.Authenticate(h); err == nil {
			t.Errorf("Authenticate(%.40q) succeeded", h)
		}
	}
}

// TestJWTLifetimeAndLeewayBounds: auth.jwt.max_lifetime widens what is
// accepted only as far as configured, and a leeway beyond
// config.MaxJWTLeeway (which would keep expired tokens alive) or a
// negative lifetime is refused at startup.
func TestJWTLifetimeAndLeewayBounds(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	base := config.JWT{Algorithm: "HS256", Secret: config.Secret(secret), RolesClaim: "roles", NameClaim: "sub"}
	week := jwt.MapClaims{"sub": "bob", "iat": testNow().Unix(), "exp": testNow().Add(7 * 24 * time.Hour).Unix()}
	tok := "Bearer " + sign(t, jwt.SigningMethodHS256, secret, week)

	def, err := New(config.Auth{JWT: base}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := def.Authenticate(tok); err == nil || !strings.Contains(err.Error(), "24h0m0s") {
		t.Fatalf("a week-long token with max_lifetime unset: %v, want a refusal naming the 24h default", err)
	}
	long := base
	long.MaxLifetime = 8 * 24 * time.Hour
	a, err := New(config.Auth{JWT: long}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := a.Authenticate(tok); err != nil || p.Name != "jwt:bob" {
		t.Fatalf("a week-long token with max_lifetime 8 days: %+v, %v", p, err)
	}

	for _, bad := range []config.JWT{
		{Leeway: config.MaxJWTLeeway + time.Second},
		{Leeway: 24 * time.Hour},
		{MaxLifetime: -time.Second},
	} {
		c := base
		c.Leeway, c.MaxLifetime = bad.Leeway, bad.MaxLifetime
		if _, err := New(config.Auth{JWT: c}, testNow); err == nil {
			t.Errorf("leeway %s, max_lifetime %s accepted", c.Leeway, c.MaxLifetime)
		}
	}
	c := base
	c.Leeway = config.MaxJWTLeeway
	if _, err := New(config.Auth{JWT: c}, testNow); err != nil {
		t.Errorf("leeway %s (the most allowed): %v", c.Leeway, err)
	}
}

// TestJWTKeyRotation: with auth.jwt.previous_secret or previous_public_key
// set, tokens signed with the key before the current one are accepted
// too, judged by the same rules; a third key still is not, nor is a
// previous key of another kind or the current key again.
func TestJWTKeyRotation(t *testing.T) {
	oldSecret, newSecret := []byte("0123456789abcdef0123456789abcdef"), []byte("fedcba9876543210fedcba9876543210")
	hs := config.JWT{Algorithm: "HS256", Secret: config.Secret(newSecret), RolesClaim: "roles", NameClaim: "sub", Leeway: 30 * time.Second}
	good := jwt.MapClaims{"sub": "bob", "iat": testNow().Unix(), "exp": testNow().Add(time.Hour).Unix()}
	expired := jwt.MapClaims{"sub": "bob", "exp": testNow().Add(-time.Hour).Unix()}

	single, err := New(config.Auth{JWT: hs}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := single.Authenticate("Bearer " + sign(t, jwt.SigningMethodHS256, oldSecret, good)); err == nil {
		t.Fatal("a token of the old secret accepted without previous_secret")
	}
	rot := hs
	rot.PreviousSecret = config.Secret(oldSecret)
	a, err := New(config.Auth{JWT: rot}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string][]byte{"new": newSecret, "previous": oldSecret} {
		if p, err := a.Authenticate("Bearer " + sign(t, jwt.SigningMethodHS256, key, good)); err != nil || p.Name != "jwt:bob" {
			t.Errorf("a token of the %s secret during rotation: %+v, %v", name, p, err)
		}
	}
	if _, err := a.Authenticate("Bearer " + sign(t, jwt.SigningMethodHS256, oldSecret, expired)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("an expired token of the previous secret: %v, want expired", err)
	}
	third := "Bearer " + sign(t, jwt.SigningMethodHS256, []byte("0000000000000000000000000000000000"), good)
	if _, err := a.Authenticate(third); err == nil {
		t.Error("a token of a third secret accepted")
	} else {
		wantUnauthenticated(t, err, third)
	}
	if _, err := a.Authenticate("Bearer " + sign(t, jwt.SigningMethodHS384, oldSecret, good)); err == nil {
		t.Error("HS384 with the previous secret accepted")
	}

	// RS256: the previous public key, and what is refused.
	cur, prev, other := rsaKey(t, 2048), rsaKey(t, 2048), rsaKey(t, 2048)
	curPath, _ := writePEM(t, &cur.PublicKey)
	prevPath, prevPEM := writePEM(t, &prev.PublicKey)
	rs := config.JWT{Algorithm: "RS256", PublicKey: curPath, PreviousPublicKey: prevPath, Audience: "orderly", RolesClaim: "roles", NameClaim: "sub"}
	r, err := New(config.Auth{JWT: rs}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	rsGood := jwt.MapClaims{"sub": "carol", "aud": "orderly", "exp": testNow().Add(time.Hour).Unix()}
	for name, key := range map[string]*rsa.PrivateKey{"current": cur, "previous": prev} {
		if p, err := r.Authenticate("Bearer " + sign(t, jwt.SigningMethodRS256, key, rsGood)); err != nil || p.Name != "jwt:carol" {
			t.Errorf("a token of the %s key: %+v, %v", name, p, err)
		}
	}
	for name, tok := range map[string]string{
		"another key":                       sign(t, jwt.SigningMethodRS256, other, rsGood),
		"HS256 with the previous key's PEM": sign(t, jwt.SigningMethodHS256, prevPEM, rsGood),
		"wrong audience, previous key":      sign(t, jwt.SigningMethodRS256, prev, jwt.MapClaims{"sub": "carol", "aud": "x", "exp": testNow().Add(time.Hour).Unix()}),
	} {
		if _, err := r.Authenticate("Bearer " + tok); err == nil {
			t.Errorf("%s accepted", name)
		}
	}

	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	edPath, _ := writePEM(t, edPub)
	for name, c := range map[string]config.JWT{
		"previous secret is the secret":     {Algorithm: "HS256", Secret: config.Secret(newSecret), PreviousSecret: config.Secret(newSecret)},
		"short previous secret":             {Algorithm: "HS256", Secret: config.Secret(newSecret), PreviousSecret: "short"},
		"previous public key with HS256":    {Algorithm: "HS256", Secret: config.Secret(newSecret), PreviousPublicKey: prevPath},
		"previous secret with RS256":        {Algorithm: "RS256", PublicKey: curPath, PreviousSecret: config.Secret(oldSecret)},
		"previous key an Ed25519 for RS256": {Algorithm: "RS256", PublicKey: curPath, PreviousPublicKey: edPath},
		"previous key the current one":      {Algorithm: "RS256", PublicKey: curPath, PreviousPublicKey: curPath},
		"previous key missing":              {Algorithm: "RS256", PublicKey: curPath, PreviousPublicKey: curPath + ".gone"},
		"previous key without algorithm":    {PreviousSecret: config.Secret(oldSecret)},
	} {
		if _, err := New(config.Auth{JWT: c}, testNow); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
