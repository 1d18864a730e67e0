package main

import (
	"net/http"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/auth"
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
