package api

import (
	"net/url"
	"regexp"
	"strings"

	"github.com/orderly-run/orderly/internal/auth"
)

// redacted stands in the audit for a credential found in a query string.
const redacted = "[redacted]"

// credentialParams are substrings of query parameter names whose values
// are taken for credentials, compared without regard to case: token,
// access_token, api_key, apikey, jwt, auth, authorization, secret,
// password, passwd, session, sig, signature, credential.
var credentialParams = []string{"token", "key", "jwt", "auth", "secret", "pass", "session", "sig", "cred", "bearer"}

// jwtShape is a compact JWS: three base64url segments, the first a JSON
// object's ("{" encodes to "ey").
var jwtShape = regexp.MustCompile(`^ey[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$`)

// auditQuery is a refused request's query string as the audit keeps it:
// as sent, but with every value that is a credential replaced by
// "[redacted]" — the value of a parameter named like one (access_token,
// api_key, …), and any value, name or bare part shaped like a credential
// orderly issues or accepts (a static token ord_…, a delegated runbook
// token, a JWT, "Bearer …"). A client that cannot set a header (a
// browser's EventSource) or that got it wrong puts its token there, and
// the audit, read by auditors, never keeps one (docs/security.md).
func auditQuery(raw string) string {
	if raw == "" {
		return raw
	}
	parts := strings.Split(raw, "&")
	for i, p := range parts {
		name, value, hasValue := strings.Cut(p, "=")
		if !hasValue {
			if credentialShaped(p) {
				parts[i] = redacted
			}
			continue
		}
		switch {
		case credentialShaped(name): // ?ord_…=1: the name is the token
			parts[i] = redacted
		case credentialName(name) || credentialShaped(value):
			parts[i] = name + "=" + redacted
		}
	}
	return strings.Join(parts, "&")
}

// credentialName reports whether a query parameter's name says it holds
// a credential.
func credentialName(name string) bool {
	if n, err := url.QueryUnescape(name); err == nil {
		name = n
	}
	name = strings.ToLower(name)
	for _, c := range credentialParams {
		if strings.Contains(name, c) {
			return true
		}
	}
	return false
}

// credentialShaped reports whether a query value (escaped as sent) looks
// like a credential, whatever its parameter is called.
func credentialShaped(v string) bool {
	if d, err := url.QueryUnescape(v); err == nil {
		v = d
	}
	for _, f := range strings.Fields(v) {
		if strings.EqualFold(f, "Bearer") || strings.HasPrefix(f, auth.TokenPrefix) || IsDelegationToken(f) || jwtShape.MatchString(f) {
			return true
		}
	}
	return false
}
