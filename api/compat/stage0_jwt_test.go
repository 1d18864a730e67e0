package compat

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/config"
)

// stage0AtFixedTime is stage0's surface whose clock stands still, with
// its token settings: HS256 with secret, issuer dev-idp, audience
// dev-api, tokens of up to 8 hours.
func stage0AtFixedTime(secret config.Secret) (time.Time, config.Config, *Stage0) {
	now := time.Unix(1_800_000_000, 0)
	cfg := config.Default()
	cfg.Compat.Stage0.JWTSecret = secret
	cfg.Compat.Stage0.JWTIssuer = "dev-idp"
	cfg.Compat.Stage0.JWTAudience = "dev-api"
	cfg.Compat.Stage0.JWTTTL = 8 * time.Hour
	return now, cfg, &Stage0{Now: func() time.Time { return now }}
}

// TestStage0JWTClaims: the 401 messages are PyJWT 2.10.1's, in its order
// of checks (iat, nbf, exp, iss, aud, sub, jti), with its int() reading
// of the time claims, as stage0 answered them (COMPAT.md §3).
func TestStage0JWTClaims(t *testing.T) {
	const secret = "stage0-jwt-test-secret"
	now, cfg, s := stage0AtFixedTime(secret)
	// sign is an HS256 token with exactly this header and payload.
	sign := func(header, payload map[string]any) string {
		enc := func(v map[string]any) string {
			b, _ := json.Marshal(v)
			return base64.RawURLEncoding.EncodeToString(b)
		}
		in := enc(header) + "." + enc(payload)
		m := hmac.New(sha256.New, []byte(secret))
		m.Write([]byte(in))
		return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}
	hs256 := map[string]any{"alg": "HS256", "typ": "JWT"}
	past, future := now.Add(-time.Hour).Unix(), now.Add(time.Hour).Unix()
	claims := func(extra map[string]any) map[string]any {
		c := map[string]any{"sub": "ci", "iss": "dev-idp", "aud": "dev-api", "exp": future}
		for k, v := range extra {
			if v == nil {
				delete(c, k)
				continue
			}
			c[k] = v
		}
		return c
	}
	for _, tc := range []struct {
		name  string
		token string
		want  string
	}{
		{"valid", sign(hs256, claims(nil)), ""},
		{"iat as a string of digits", sign(hs256, claims(map[string]any{"iat": " 1_799_999_000 "})), ""},
		// int() reads any script's decimal digits and strips Unicode white space.
		{"iat in Arabic-Indic digits", sign(hs256, claims(map[string]any{"iat": "\u00a0\u0661\u0667\u0669\u0669\u0669\u0669\u0669\u0660\u0660\u0660\u3000"})), ""},
		// orderly's bound (docs/compat.md): exp required, and the token
		// no longer-lived than compat.stage0.jwt_ttl, /dev-login's.
		{"no exp", sign(hs256, claims(map[string]any{"exp": nil})), `Invalid token: Token is missing the "exp" claim`},
		{"exp ten years out", sign(hs256, claims(map[string]any{"exp": now.AddDate(10, 0, 0).Unix()})), "Invalid token: The token lives longer than 8h0m0s (compat.stage0.jwt_ttl)"},
		{"exp ten years out, in digits of another script", sign(hs256, claims(map[string]any{"exp": pyDigits(now.AddDate(10, 0, 0).Unix())})), "Invalid token: The token lives longer than 8h0m0s (compat.stage0.jwt_ttl)"},
		{"iat a year ago", sign(hs256, claims(map[string]any{"iat": now.AddDate(-1, 0, 0).Unix()})), "Invalid token: The token lives longer than 8h0m0s (compat.stage0.jwt_ttl)"},
		{"nbf a year ago", sign(hs256, claims(map[string]any{"nbf": now.AddDate(-1, 0, 0).Unix()})), "Invalid token: The token lives longer than 8h0m0s (compat.stage0.jwt_ttl)"},
		{"exactly jwt_ttl", sign(hs256, claims(map[string]any{"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(8 * time.Hour).Unix()})), ""},
		{"minted a few seconds ahead", sign(hs256, claims(map[string]any{"exp": now.Add(8*time.Hour + 5*time.Second).Unix()})), ""},
		{"exp past in fullwidth digits", sign(hs256, claims(map[string]any{"exp": "\uff11_\uff10\uff10\uff10"})), "Token has expired"},
		{"exp in mathematical digits, future", sign(hs256, claims(map[string]any{"exp": pyDigits(future)})), ""},
		{"nbf in superscript", sign(hs256, claims(map[string]any{"nbf": "\u00b2"})), "Invalid token: Not Before claim (nbf) must be an integer."},
		{"iat in the future", sign(hs256, claims(map[string]any{"iat": future})), "Invalid token: The token is not yet valid (iat)"},
		{"iat not an integer", sign(hs256, claims(map[string]any{"iat": "abc"})), "Invalid token: Issued At claim (iat) must be an integer."},
		{"iat null", sign(hs256, claims(map[string]any{"iat": json.RawMessage("null")})),
			"Error decoding token: int() argument must be a string, a bytes-like object or a real number, not 'NoneType'"},
		{"nbf before exp", sign(hs256, claims(map[string]any{"nbf": future, "exp": past})), "Invalid token: The token is not yet valid (nbf)"},
		{"nbf not an integer", sign(hs256, claims(map[string]any{"nbf": "1.5"})), "Invalid token: Not Before claim (nbf) must be an integer."},
		{"expired", sign(hs256, claims(map[string]any{"exp": past})), "Token has expired"},
		{"exp not an integer", sign(hs256, claims(map[string]any{"exp": "abc"})), "Invalid token: Expiration Time claim (exp) must be an integer."},
		{"iss before aud", sign(hs256, claims(map[string]any{"iss": "other", "aud": "other"})), "Invalid token: Invalid issuer"},
		{"iss a number", sign(hs256, claims(map[string]any{"iss": 5})), "Invalid token: Invalid issuer"},
		{"iss missing", sign(hs256, claims(map[string]any{"iss": nil})), `Invalid token: Token is missing the "iss" claim`},
		{"aud a number", sign(hs256, claims(map[string]any{"aud": 5})), "Invalid token: Invalid claim format in token"},
		{"aud list with a number", sign(hs256, claims(map[string]any{"aud": []any{"dev-api", 5}})), "Invalid token: Invalid claim format in token"},
		{"aud empty list", sign(hs256, claims(map[string]any{"aud": []any{}})), `Invalid token: Token is missing the "aud" claim`},
		{"aud list", sign(hs256, claims(map[string]any{"aud": []any{"x", "dev-api"}})), ""},
		{"aud other", sign(hs256, claims(map[string]any{"aud": "other"})), "Invalid token: Audience doesn't match"},
		{"sub a number", sign(hs256, claims(map[string]any{"sub": 123})), "Invalid token: Subject must be a string"},
		{"jti a number", sign(hs256, claims(map[string]any{"jti": 1})), "Invalid token: JWT ID must be a string"},
		{"no alg", sign(map[string]any{"typ": "JWT"}, claims(nil)), "Invalid token: Algorithm not specified"},
		{"alg HS512", sign(map[string]any{"alg": "HS512"}, claims(nil)), "Invalid token: The specified alg value is not allowed"},
		{"bad signature", sign(hs256, claims(nil)) + "AAAA", "Invalid token: Signature verification failed"},
		{"two segments", "abc.def", "Invalid token: Not enough segments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/api/runbooks", nil)
			r.Header.Set("Authorization", "Bearer "+tc.token)
			_, status, msg := s.authenticate(r, cfg)
			if msg != tc.want || (tc.want == "") != (status == 0) {
				t.Errorf("got %d %q, want %q", status, msg, tc.want)
			}
		})
	}
}

// pyDigits writes n in MATHEMATICAL SANS-SERIF BOLD digits (U+1D7EC…),
// which Python's int() reads as decimal.
func pyDigits(n int64) string {
	var b strings.Builder
	for _, c := range strconv.FormatInt(n, 10) {
		b.WriteRune(0x1D7EC + c - '0')
	}
	return b.String()
}
