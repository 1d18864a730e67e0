package auth

import (
	"fmt"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// claimValues keeps the claims of a JWT that a runbook's Required Claims
// can name: each as its list of string values (a string is one value, a
// list of strings its items, a number or boolean its text). Objects are
// left out: no required claim can match them. So is a string holding NUL,
// which no runbook's text can require and PostgreSQL cannot store (a
// delegation keeps the claims of the chain's principal).
func claimValues(claims jwt.MapClaims) map[string][]string {
	out := make(map[string][]string, len(claims))
	for k, v := range claims {
		switch v := v.(type) {
		case string:
			out[k] = ClaimStrings(v)
		case float64, bool:
			out[k] = []string{fmt.Sprint(v)}
		case []any:
			out[k] = ClaimStrings(v...)
		}
	}
	return out
}

// ClaimStrings is the string values among vals that a principal's claims
// may keep: every string without NUL.
func ClaimStrings(vals ...any) []string {
	out := make([]string, 0, len(vals))
	for _, v := range vals {
		if s, ok := v.(string); ok && !strings.ContainsRune(s, 0) {
			out = append(out, s)
		}
	}
	return out
}
