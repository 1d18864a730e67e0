package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
)

// writePEM writes pub as a PKIX "PUBLIC KEY" PEM file in a temp dir and
// returns its path and bytes.
func writePEM(t *testing.T, pub any) (string, []byte) {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	p := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func rsaKey(t *testing.T, bits int) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// wantUnauthenticated checks err is a 401 *order.Error that does not leak
// the presented credential.
func wantUnauthenticated(t *testing.T, err error, secret string) {
	t.Helper()
	var oe *order.Error
	if !errors.As(err, &oe) || oe.Code != order.CodeUnauthenticated {
		t.Fatalf("err = %v, want *order.Error with %s", err, order.CodeUnauthenticated)
	}
	if secret != "" && len(secret) > 8 && (strings.Contains(oe.Message, secret) || strings.Contains(err.Error(), secret)) {
		t.Fatalf("error %q echoes the credential", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	rsaPath, _ := writePEM(t, &rsaKey(t, 2048).PublicKey)
	smallRSAPath, _ := writePEM(t, &rsaKey(t, 1024).PublicKey)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	edPath, _ := writePEM(t, edPub)
	notPEM := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(notPEM, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := strings.Repeat("s", 32)
	good := HashToken("tok")

	tests := []struct {
		name string
		cfg  config.Auth
		want string // substring of the error
	}{
		{"short hash", config.Auth{Tokens: []config.Token{{Name: "a", SHA256: good[:10]}}}, "64 hex"},
		{"non-hex hash", config.Auth{Tokens: []config.Token{{Name: "a", SHA256: strings.Repeat("z", 64)}}}, "not hex"},
		{"missing name", config.Auth{Tokens: []config.Token{{SHA256: good}}}, "name is required"},
		{"empty role", config.Auth{Tokens: []config.Token{{Name: "a", SHA256: good, Roles: []string{""}}}}, "role"},
		{"token name in the JWT namespace", config.Auth{Tokens: []config.Token{{Name: "jwt:alice", SHA256: good}}}, "JWT principals"},
		{"same hash two names", config.Auth{Tokens: []config.Token{{Name: "a", SHA256: good}, {Name: "b", SHA256: good}}}, "already registered"},
		{"unknown alg", config.Auth{JWT: config.JWT{Algorithm: "HS512", Secret: config.Secret(secret)}}, "not supported"},
		{"alg none", config.Auth{JWT: config.JWT{Algorithm: "none"}}, "not supported"},
		{"HS256 short secret", config.Auth{JWT: config.JWT{Algorithm: "HS256", Secret: "short"}}, "at least 32 bytes"},
		{"HS256 with key", config.Auth{JWT: config.JWT{Algorithm: "HS256", Secret: config.Secret(secret), PublicKey: rsaPath}}, "not used with HS256"},
		{"RS256 missing key", config.Auth{JWT: config.JWT{Algorithm: "RS256"}}, "public_key is required"},
		{"RS256 key file missing", config.Auth{JWT: config.JWT{Algorithm: "RS256", PublicKey: filepath.Join(t.TempDir(), "nope.pem")}}, "no such file"},
		{"RS256 not PEM", config.Auth{JWT: config.JWT{Algorithm: "RS256", PublicKey: notPEM}}, "not an RSA public key"},
		{"RS256 given Ed25519 key", config.Auth{JWT: config.JWT{Algorithm: "RS256", PublicKey: edPath}}, "not an RSA public key"},
		{"RS256 1024-bit key", config.Auth{JWT: config.JWT{Algorithm: "RS256", PublicKey: smallRSAPath}}, "1024 bits"},
		{"RS256 with secret", config.Auth{JWT: config.JWT{Algorithm: "RS256", PublicKey: rsaPath, Secret: config.Secret(secret)}}, "secret is not used"},
		{"EdDSA given RSA key", config.Auth{JWT: config.JWT{Algorithm: "EdDSA", PublicKey: rsaPath}}, "not an Ed25519 public key"},
		{"EdDSA missing key", config.Auth{JWT: config.JWT{Algorithm: "EdDSA"}}, "public_key is required"},
		{"key without algorithm", config.Auth{JWT: config.JWT{PublicKey: rsaPath}}, "no algorithm"},
		{"negative leeway", config.Auth{JWT: config.JWT{Algorithm: "HS256", Secret: config.Secret(secret), Leeway: -time.Second}}, "leeway"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestNewAcceptsGoodConfig(t *testing.T) {
	rsaPath, _ := writePEM(t, &rsaKey(t, 2048).PublicKey)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	edPath, _ := writePEM(t, edPub)
	tests := []struct {
		name string
		cfg  config.Auth
	}{
		{"empty", config.Auth{}},
		{"config defaults", config.Default().Auth},
		{"uppercase hex", config.Auth{Tokens: []config.Token{{Name: "a", SHA256: strings.ToUpper(HashToken("x"))}}}},
		{"HS256", config.Auth{JWT: config.JWT{Algorithm: "HS256", Secret: config.Secret(strings.Repeat("k", 32))}}},
		{"rs256 any case", config.Auth{JWT: config.JWT{Algorithm: "rs256", PublicKey: rsaPath}}},
		{"EdDSA", config.Auth{JWT: config.JWT{Algorithm: "EdDSA", PublicKey: edPath}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg, nil); err != nil {
				t.Fatalf("New: %v", err)
			}
		})
	}
}

func TestAuthenticateStaticToken(t *testing.T) {
	opsTok, opsHash := NewToken()
	monTok, monHash := NewToken()
	a, err := New(config.Auth{Tokens: []config.Token{
		{Name: "ops", SHA256: opsHash, Roles: []string{"admin", "ops"}},
		{Name: "monitor", SHA256: monHash, Roles: []string{"monitor"}},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	unknown, _ := NewToken()

	tests := []struct {
		name   string
		header string
		want   Principal // zero: expect 401
	}{
		{"ops", "Bearer " + opsTok, Principal{Name: "ops", Roles: []string{"admin", "ops"}, Kind: KindToken}},
		{"monitor", "Bearer " + monTok, Principal{Name: "monitor", Roles: []string{"monitor"}, Kind: KindToken}},
		{"lowercase scheme", "bearer " + opsTok, Principal{Name: "ops", Roles: []string{"admin", "ops"}, Kind: KindToken}},
		{"uppercase scheme", "BEARER " + opsTok, Principal{Name: "ops", Roles: []string{"admin", "ops"}, Kind: KindToken}},
		{"extra spaces", "Bearer   " + opsTok + " ", Principal{Name: "ops", Roles: []string{"admin", "ops"}, Kind: KindToken}},
		{"unknown token", "Bearer " + unknown, Principal{}},
		{"token prefix of a real one", "Bearer " + opsTok[:len(opsTok)-1], Principal{}},
		{"the hash instead of the token", "Bearer " + opsHash, Principal{}},
		{"empty header", "", Principal{}},
		{"scheme only", "Bearer", Principal{}},
		{"scheme and space", "Bearer ", Principal{}},
		{"basic scheme", "Basic " + opsTok, Principal{}},
		{"no scheme", opsTok, Principal{}},
		{"space inside token", "Bearer " + opsTok[:10] + " " + opsTok[10:], Principal{}},
		{"quote in token", "Bearer \"" + opsTok + "\"", Principal{}},
		{"NUL in token", "Bearer " + opsTok + "\x00", Principal{}},
		{"non-ASCII token", "Bearer " + opsTok + "é", Principal{}},
		{"only padding", "Bearer ===", Principal{}},
		{"oversized", "Bearer " + opsTok + strings.Repeat("A", MaxHeaderBytes), Principal{}},
		{"JWT-shaped without JWT configured", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJvcHMifQ.", Principal{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := a.Authenticate(tt.header)
			if tt.want.Name == "" {
				wantUnauthenticated(t, err, strings.TrimPrefix(tt.header, "Bearer "))
				if p.Name != "" {
					t.Fatalf("failed authentication returned principal %+v", p)
				}
				return
			}
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			if p.Name != tt.want.Name || p.Kind != tt.want.Kind || !slices.Equal(p.Roles, tt.want.Roles) {
				t.Fatalf("principal = %+v, want %+v", p, tt.want)
			}
		})
	}
}

func TestPrincipalRolesAreCopies(t *testing.T) {
	tok, hash := NewToken()
	roles := []string{"ops"}
	a, err := New(config.Auth{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.AddToken("ops", hash, roles); err != nil {
		t.Fatal(err)
	}
	roles[0] = "admin" // the caller's slice must not alias the registry
	p, err := a.Authenticate("Bearer " + tok)
	if err != nil {
		t.Fatal(err)
	}
	p.Roles[0] = "root" // nor must a returned principal
	p2, _ := a.Authenticate("Bearer " + tok)
	if !slices.Equal(p2.Roles, []string{"ops"}) {
		t.Fatalf("roles = %v, want [ops]", p2.Roles)
	}
}

func TestAddToken(t *testing.T) {
	tok, hash := NewToken()
	a, err := New(config.Auth{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate("Bearer " + tok); err == nil {
		t.Fatal("token accepted before AddToken")
	}

	steps := []struct {
		name, tokName, hash string
		roles               []string
		wantErr             string
		wantRoles           []string // roles of tok after the step
	}{
		{"register", "admin", hash, []string{"admin"}, "", []string{"admin"}},
		{"same name updates roles", "admin", hash, []string{"admin", "ops"}, "", []string{"admin", "ops"}},
		{"uppercase hex is the same hash", "admin", strings.ToUpper(hash), []string{"admin"}, "", []string{"admin"}},
		{"same hash other name", "mallory", hash, []string{"admin"}, "already registered", []string{"admin"}},
		{"same name other hash", "admin", HashToken("other"), []string{"admin"}, "another token already has this name", []string{"admin"}},
		{"bad hex", "x", "xyz", nil, "64 hex", []string{"admin"}},
		{"empty name", "", HashToken("other"), nil, "name is required", []string{"admin"}},
		{"control char in name", "a\nb", HashToken("other"), nil, "control characters", []string{"admin"}},
	}
	for _, s := range steps {
		err := a.AddToken(s.tokName, s.hash, s.roles)
		if s.wantErr == "" && err != nil {
			t.Fatalf("%s: AddToken: %v", s.name, err)
		}
		if s.wantErr != "" && (err == nil || !strings.Contains(err.Error(), s.wantErr)) {
			t.Fatalf("%s: AddToken err = %v, want %q", s.name, err, s.wantErr)
		}
		p, err := a.Authenticate("Bearer " + tok)
		if err != nil {
			t.Fatalf("%s: Authenticate: %v", s.name, err)
		}
		if p.Name != "admin" || !slices.Equal(p.Roles, s.wantRoles) {
			t.Fatalf("%s: principal = %+v, want admin with %v", s.name, p, s.wantRoles)
		}
	}
}

func TestHasRole(t *testing.T) {
	p := Principal{Name: "n", Roles: []string{"ops", "monitor"}}
	tests := []struct {
		role string
		want bool
	}{{"ops", true}, {"monitor", true}, {"admin", false}, {"", false}, {"OPS", false}}
	for _, tt := range tests {
		if got := p.HasRole(tt.role); got != tt.want {
			t.Errorf("HasRole(%q) = %v, want %v", tt.role, got, tt.want)
		}
	}
}

// TestStaticTokenRotationKeepsThePrincipal: a token entry with the new
// hash as sha256 and the old one as previous_sha256 accepts both as the
// same principal, so a client rotated to a new token keeps its name (its
// orders, idempotency keys and policy rules); without previous_sha256 the
// old token is refused.
func TestStaticTokenRotationKeepsThePrincipal(t *testing.T) {
	oldTok, oldHash := NewToken()
	newTok, newHash := NewToken()
	otherTok, otherHash := NewToken()
	during, err := New(config.Auth{Tokens: []config.Token{
		{Name: "ci", SHA256: newHash, PreviousSHA256: oldHash, Roles: []string{"ops"}},
		{Name: "other", SHA256: otherHash, Roles: []string{"audit"}},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{oldTok, newTok} {
		p, err := during.Authenticate("Bearer " + tok)
		if err != nil {
			t.Fatalf("during the rotation: %v", err)
		}
		if p.Name != "ci" || !slices.Equal(p.Roles, []string{"ops"}) {
			t.Fatalf("during the rotation: principal = %+v, want ci with [ops]", p)
		}
	}
	if p, err := during.Authenticate("Bearer " + otherTok); err != nil || p.Name != "other" {
		t.Fatalf("another token: %+v, %v", p, err)
	}

	after, err := New(config.Auth{Tokens: []config.Token{{Name: "ci", SHA256: newHash, Roles: []string{"ops"}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantUnauthenticated(t, func() error { _, err := after.Authenticate("Bearer " + oldTok); return err }(), oldTok)
	if p, err := after.Authenticate("Bearer " + newTok); err != nil || p.Name != "ci" {
		t.Fatalf("after the rotation: %+v, %v", p, err)
	}

	// A runtime token may not take the name, and previous_sha256 may not be
	// its own sha256 or another token's.
	if err := during.AddToken("ci", HashToken("third"), nil); err == nil || !strings.Contains(err.Error(), "another token already has this name") {
		t.Fatalf("a runtime token under a rotating name: %v", err)
	}
	for _, bad := range []config.Token{
		{Name: "ci", SHA256: newHash, PreviousSHA256: newHash},
		{Name: "ci", SHA256: newHash, PreviousSHA256: otherHash},
		{Name: "ci", SHA256: newHash, PreviousSHA256: "xyz"},
	} {
		_, err := New(config.Auth{Tokens: []config.Token{{Name: "other", SHA256: otherHash}, bad}}, nil)
		if err == nil || !strings.Contains(err.Error(), "previous_sha256") {
			t.Fatalf("previous_sha256 %.8s…: err = %v, want one naming previous_sha256", bad.PreviousSHA256, err)
		}
	}
}
