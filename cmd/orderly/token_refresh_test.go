package main

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestAPIPicksUpRotatedTokens: a runtime token rotated by another process
// (serve's admin token, written to api_tokens) is taken by a running API
// without a reload: the new one works and the old one is refused.
func TestAPIPicksUpRotatedTokens(t *testing.T) {
	old := tokenRefresh
	tokenRefresh = 100 * time.Millisecond
	defer func() { tokenRefresh = old }()
	s := newStack(t)
	status := func(tok string) int {
		code, _ := s.do("GET", "/v1/hosts", nil, "Authorization", "Bearer "+tok)
		return code
	}
	if status(s.token) != http.StatusOK {
		t.Fatal("the admin token does not work to begin with")
	}
	tok, sum := auth.NewToken()
	if err := s.b.store.ReplaceAPIToken(t.Context(), postgres.APIToken{Name: "admin", SHA256: sum, Roles: []string{"admin"}}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, 10*time.Second, "the rotated token", func() bool { return status(tok) == http.StatusOK })
	if code := status(s.token); code != http.StatusUnauthorized {
		t.Fatalf("the token rotated away: %d, want 401", code)
	}
}

// TestConfigTokenNamedLikeARuntimeToken: a config token with the name of
// a runtime token (serve's admin token is "admin") is refused, not merged
// into one principal: the two would share orders and policy rules. The
// Vigrid import, whose configs often name a token admin, says so.
func TestConfigTokenNamedLikeARuntimeToken(t *testing.T) {
	cfg := config.Auth{Tokens: []config.Token{{Name: "admin", SHA256: auth.HashToken("imported")}}}
	_, err := (&security{}).authWith(cfg, []postgres.APIToken{{Name: "admin", SHA256: auth.HashToken("serve's own"), Roles: []string{"admin"}}})
	if err == nil || !strings.Contains(err.Error(), "another token already has this name") || !strings.Contains(err.Error(), "api_tokens") {
		t.Fatalf("a config token named like serve's admin token: %v, want a refusal naming api_tokens", err)
	}
	_, notes, err := convertVigrid([]byte("tokens:\n  admin:\n    secret: s3cret-admin-token\n"), "vigrid.yaml", "vx")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, `token "admin": orderly serve keeps its own`) }) {
		t.Errorf("import notes %q do not warn about the admin token", notes)
	}
}
