package runbook

import (
	"slices"
	"strings"
)

// Operations a principal's claims are checked for, as stage0 names them in
// its RBAC messages.
const (
	OpValidate = "validate"
	OpExecute  = "execute"
)

// CheckClaims judges a principal's claims against the runbook's Required
// Claims: every required claim must be present and share at least one
// exact value with its allowed values (an AND of claims, an OR of values).
// It returns "" when they are satisfied, else stage0's message, which
// names each failing claim with what the principal has.
func (rb *Runbook) CheckClaims(op string, have map[string][]string) string {
	var failed []string
	for _, c := range rb.Claims {
		values, ok := have[c.Name]
		if !ok {
			failed = append(failed, c.Name+" (not present)")
			continue
		}
		if slices.ContainsFunc(values, func(v string) bool { return slices.Contains(c.Allowed, v) }) {
			continue
		}
		failed = append(failed, c.Name+"="+strings.Join(values, ", ")+" (required: "+strings.Join(c.Allowed, ", ")+")")
	}
	if len(failed) == 0 {
		return ""
	}
	return "RBAC check failed for " + op + ". Missing or invalid claims: " + strings.Join(failed, ", ")
}
