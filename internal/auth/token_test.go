package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

func TestHashToken(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
	}
	for _, tt := range tests {
		if got := HashToken(tt.in); got != tt.want {
			t.Errorf("HashToken(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestNewToken(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tok, hash := NewToken()
		if !strings.HasPrefix(tok, TokenPrefix) {
			t.Fatalf("token %q lacks prefix %q", tok, TokenPrefix)
		}
		if len(tok) != len(TokenPrefix)+43 { // 32 bytes of unpadded base64url
			t.Fatalf("token length %d, want %d", len(tok), len(TokenPrefix)+43)
		}
		if !validBearer(tok) || strings.Contains(tok, ".") {
			t.Fatalf("token %q is not a plain bearer token", tok)
		}
		if hash != HashToken(tok) {
			t.Fatalf("hash %s is not HashToken(token)", hash)
		}
		if seen[tok] {
			t.Fatalf("NewToken repeated %q", tok)
		}
		seen[tok] = true
	}
}

// TestFindHashComparesAll proves the lookup has no early exit: with the
// same hash registered twice, finding the later one means the loop went on
// comparing after the first match, and a miss compares every entry too.
func TestFindHashComparesAll(t *testing.T) {
	h := func(s string) [sha256.Size]byte { return sha256.Sum256([]byte(s)) }
	entries := []tokenEntry{
		{name: "a", hash: h("x")},
		{name: "b", hash: h("y")},
		{name: "c", hash: h("x")},
		{name: "d", hash: h("z")},
	}
	tests := []struct {
		name    string
		entries []tokenEntry
		sum     [sha256.Size]byte
		want    int
	}{
		{"match continues past first hit", entries, h("x"), 2},
		{"single match", entries, h("y"), 1},
		{"last entry", entries, h("z"), 3},
		{"no match", entries, h("nope"), -1},
		{"no entries", nil, h("x"), -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := findHash(tt.entries, tt.sum); got != tt.want {
				t.Errorf("findHash = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestParseHash(t *testing.T) {
	good := HashToken("t")
	tests := []struct {
		in string
		ok bool
	}{
		{good, true},
		{good[:63], false},
		{good + "0", false},
		{strings.Repeat("g", 64), false},
		{"", false},
	}
	for _, tt := range tests {
		h, err := parseHash(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("parseHash(%q) err = %v, want ok=%v", tt.in, err, tt.ok)
		}
		if tt.ok && hex.EncodeToString(h[:]) != tt.in {
			t.Errorf("parseHash(%q) round trip = %x", tt.in, h)
		}
	}
}
