package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
)

// FuzzAuthenticate gives Authenticate Authorization headers, and JWTs
// whose header and claims the fuzzer writes but which are signed with the
// configured HS256 secret (so the claims' checks, not the signature's,
// are what is fuzzed). A refusal is CodeUnauthenticated with a message
// that does not repeat the credential; an acceptance is the static
// token's principal or "jwt:" and a valid name, with valid role names,
// of a token signed by the secret with an exp the lifetime bounds allow.
func FuzzAuthenticate(f *testing.F) {
	const secret = "0123456789abcdef0123456789abcdef"
	staticTok, staticHash := NewToken()
	a, err := New(config.Auth{
		Tokens: []config.Token{{Name: "robot", SHA256: staticHash, Roles: []string{"ops"}}},
		JWT: config.JWT{Algorithm: "HS256", Secret: config.Secret(secret), Issuer: "https://idp.example",
			Audience: "orderly", Leeway: 30 * time.Second, MaxLifetime: 24 * time.Hour, RolesClaim: "roles", NameClaim: "sub"},
	}, testNow)
	if err != nil {
		f.Fatal(err)
	}
	exp := testNow().Add(time.Hour).Unix()
	good := `{"sub":"alice","iss":"https://idp.example","aud":"orderly","exp":` + itoa(exp) + `,"roles":["ops"]}`
	hs := `{"alg":"HS256","typ":"JWT"}`
	for _, s := range []struct{ auth, header, claims string }{
		{"Bearer " + staticTok, hs, good},
		{"bearer  " + staticTok + "  ", hs, strings.Replace(good, `"ops"`, `"ops","a b"`, 1)},
		{"Basic dXNlcjpwYXNz", `{"alg":"none"}`, good},
		{"Bearer " + rawJWT(`{"alg":"none"}`, good, ""), `{"alg":"HS256","crit":["x"]}`, good},
		{"Bearer a.b.c", hs, strings.Replace(good, `"alice"`, `"al\u0000ice"`, 1)},
		{"Bearer ====", hs, strings.Replace(good, `"exp":`, `"exp":1e300,"x":`, 1)},
		{"Bearer x", `{"alg":"HS256","kid":"../../etc/passwd"}`, `{"sub":"alice","exp":"soon"}`},
		{"Bearer " + staticTok + "x", hs, `{"sub":["alice"],"iss":"https://idp.example","aud":["x","orderly"],"exp":` + itoa(exp) + `,"nbf":-1e30}`},
		{"", hs, `{"sub":"alice","iss":"https://idp.example","aud":"orderly","exp":` + itoa(exp) + `,"roles":"ops admin","iat":9.5e18}`},
	} {
		f.Add(s.auth, s.header, s.claims)
	}
	f.Fuzz(func(t *testing.T, authorization, header, claims string) {
		p, err := a.Authenticate(authorization)
		check(t, authorization, p, err, staticTok)
		tok := signHS256(secret, header, claims)
		p, err = a.Authenticate("Bearer " + tok)
		check(t, tok, p, err, staticTok)
	})
}

func check(t *testing.T, cred string, p Principal, err error, staticTok string) {
	t.Helper()
	if err != nil {
		var oe *order.Error
		if !errors.As(err, &oe) || oe.Code != order.CodeUnauthenticated {
			t.Fatalf("%q refused with %v (%T), want CodeUnauthenticated", cred, err, err)
		}
		if len(cred) > 8 && strings.Contains(oe.Message, cred) {
			t.Fatalf("the refusal of %q repeats it: %s", cred, oe.Message)
		}
		return
	}
	switch p.Kind {
	case KindToken:
		if p.Name != "robot" || !strings.Contains(cred, staticTok) {
			t.Fatalf("%q accepted as static token principal %q", cred, p.Name)
		}
	case KindJWT:
		name, ok := strings.CutPrefix(p.Name, "jwt:")
		if !ok || !ValidName(name) {
			t.Fatalf("%q accepted as %q", cred, p.Name)
		}
	default:
		t.Fatalf("%q accepted as kind %v", cred, p.Kind)
	}
	for _, r := range p.Roles {
		if !ValidName(r) {
			t.Fatalf("%q accepted with role %q", cred, r)
		}
	}
}

// signHS256 is a compact JWT of header and claims, as written, signed
// with secret.
func signHS256(secret, header, claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	in := enc([]byte(header)) + "." + enc([]byte(claims))
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(in))
	return in + "." + enc(mac.Sum(nil))
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
