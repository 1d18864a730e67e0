package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
)

// TokenPrefix starts every token NewToken makes, so a leaked token is easy
// to recognize (secret scanners, logs) and never mistaken for a JWT.
const TokenPrefix = "ord_"

// NewToken returns a fresh static token and the hex SHA-256 to store in its
// place: 32 random bytes is beyond guessing, and only the hash is ever kept.
func NewToken() (token string, sha256hex string) {
	var b [32]byte
	// crypto/rand.Read never returns an error since Go 1.24: it crashes the
	// program rather than hand out predictable bytes.
	_, _ = rand.Read(b[:])
	token = TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return token, HashToken(token)
}

// HashToken returns the lowercase hex SHA-256 of the whole token string, the
// form in which config and the store hold static tokens.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Sendable reports whether token could be sent as a bearer credential
// (an RFC 6750 b64token, as Authenticate requires): a stored token that
// is not could never be presented.
func Sendable(token string) bool { return validBearer(token) }

// tokenEntry is one registered static token: its hash, never the token.
type tokenEntry struct {
	name     string
	hash     [sha256.Size]byte
	roles    []string
	previous bool // the token a rotation replaces (previous_sha256)
}

// parseHash decodes a configured hex SHA-256, so a typo in config is an
// error at startup instead of a token that silently never matches.
func parseHash(s string) ([sha256.Size]byte, error) {
	var h [sha256.Size]byte
	if len(s) != 2*sha256.Size {
		return h, fmt.Errorf("sha256 must be %d hex characters, got %d", 2*sha256.Size, len(s))
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("sha256 is not hex: %w", err)
	}
	return h, nil
}

// findHash returns the index of the last entry whose hash equals sum, or -1.
// It compares sum with every entry and selects the index without branching,
// so the time taken reveals neither whether a token matched nor which one.
// Returning the last match (not the first) is what lets a test prove the
// loop never stops early.
func findHash(entries []tokenEntry, sum [sha256.Size]byte) int {
	idx := -1
	for i := range entries {
		eq := subtle.ConstantTimeCompare(entries[i].hash[:], sum[:])
		idx = subtle.ConstantTimeSelect(eq, i, idx)
	}
	return idx
}
