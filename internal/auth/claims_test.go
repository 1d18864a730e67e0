package auth

import (
	"reflect"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// TestClaimValuesLeaveOutNUL: a claim value holding NUL is left out of
// the principal's claims (a runbook run stores them in PostgreSQL, which
// refused the delegation and answered the run 500); the others stay.
func TestClaimValuesLeaveOutNUL(t *testing.T) {
	got := claimValues(jwt.MapClaims{"team": "a\x00b", "groups": []any{"x\x00", "y", 3.0}, "org": "acme", "admin": true})
	want := map[string][]string{"team": {}, "groups": {"y"}, "org": {"acme"}, "admin": {"true"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("claims %v, want %v", got, want)
	}
}
