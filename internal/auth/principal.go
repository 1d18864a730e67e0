// Package auth turns the Authorization header of a request into a Principal:
// static bearer tokens, kept only as SHA-256 hashes and compared in constant
// time, and JSON Web Tokens with one pinned algorithm (DESIGN §4.2).
package auth

import "slices"

// The kinds of credential a Principal was authenticated with, so audit logs
// and policy can tell a static token from an identity provider's assertion.
const (
	KindToken = "token"
	KindJWT   = "jwt"
)

// JWTPrefix starts the name of every principal proven by a JWT: "jwt:alice"
// for sub "alice". A static token's principal is its configured name, and
// no token name may start with the prefix, so the identity provider cannot
// mint a principal that reads, cancels or spends the limits of a static
// token's (a JWT with sub "alice" is never the token principal "alice").
const JWTPrefix = KindJWT + ":"

// Principal is who made a request: the name policy rules and history refer
// to, the roles policy rules grant permissions to, and how it was proven.
// Name is the full identity, source included (see JWTPrefix): it is what
// orders store as their principal, what read scoping, cancel rights,
// idempotency keys and rate limits are keyed by.
type Principal struct {
	Name  string
	Roles []string
	Kind  string // KindToken or KindJWT
	// Claims are a JWT's claims as string values, for the Required Claims
	// of runbooks; nil for a static token, whose roles stand in for them.
	Claims map[string][]string
}

// HasRole reports whether p holds role r; policy rules are keyed by role so
// that permissions follow the role, not each token.
func (p Principal) HasRole(r string) bool {
	return slices.Contains(p.Roles, r)
}
