package auth

import (
	"fmt"

	"github.com/golang-jwt/jwt/v5"
)

// claimValues keeps the claims of a JWT that a runbook's Required Claims
// can name: each as its list of string values (a string is one value, a
// list of strings its items, a number or boolean its text). Objects are
// left out: no required claim can match them.
func claimValues(claims jwt.MapClaims) map[string][]string {
	out := make(map[string][]string, len(claims))
	for k, v := range claims {
		switch v := v.(type) {
		case string:
			out[k] = []string{v}
		case float64, bool:
			out[k] = []string{fmt.Sprint(v)}
		case []any:
			vals := make([]string, 0, len(v))
			for _, item := range v {
				if s, ok := item.(string); ok {
					vals = append(vals, s)
				}
			}
			out[k] = vals
		}
	}
	return out
}
