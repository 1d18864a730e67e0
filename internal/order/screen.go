package order

import (
	"strings"
	"unicode/utf8"
)

// EnvDenied reports the entry of deny that refuses the environment name.
// Entries are exact names or prefixes ending in '*', compared without
// regard to case: no libc honours ld_preload, but a variable that differs
// from a denied one only by case has no legitimate use either. Both the
// API and every worker apply it, each with its own list.
func EnvDenied(name string, deny []string) (string, bool) {
	for _, rule := range deny {
		if prefix, ok := strings.CutSuffix(rule, "*"); ok {
			if len(name) >= len(prefix) && strings.EqualFold(name[:len(prefix)], prefix) {
				return rule, true
			}
		} else if strings.EqualFold(name, rule) {
			return rule, true
		}
	}
	return "", false
}

// EnvAllowed reports whether allow lets an order of kind set the
// environment name: any name when allow is empty, else an exact name
// (case matters: it is what the program reads) or a prefix ending in '*'.
// A script order's RUNBOOK_* variables are the API's own, always set.
func EnvAllowed(name string, allow []string, kind Kind) bool {
	if len(allow) == 0 || kind == KindScript && strings.HasPrefix(name, "RUNBOOK_") {
		return true
	}
	for _, rule := range allow {
		if prefix, ok := strings.CutSuffix(rule, "*"); ok {
			if strings.HasPrefix(name, prefix) {
				return true
			}
		} else if name == rule {
			return true
		}
	}
	return false
}

// ForbiddenRune returns the first character of s that forbidden lists.
func ForbiddenRune(s, forbidden string) (rune, bool) {
	if forbidden == "" {
		return 0, false
	}
	i := strings.IndexAny(s, forbidden)
	if i < 0 {
		return 0, false
	}
	r, _ := utf8.DecodeRuneInString(s[i:])
	return r, true
}

// Screen refuses an order that a worker with these settings would refuse
// for its environment names or its characters, so the client hears it at
// once instead of through a rejected order.
func Screen(o *Order, envDeny, envAllow []string, forbidden string) error {
	for _, name := range envNames(o.Env) { // the first problem reported is the same every time
		if rule, bad := EnvDenied(name, envDeny); bad {
			return FieldError(CodeForbidden, "env", "environment variable %s may not be set (env_deny %q)", Printable(name), rule)
		}
		if !EnvAllowed(name, envAllow, o.Kind) {
			return FieldError(CodeForbidden, "env", "environment variable %s may not be set (not in env_allow)", Printable(name))
		}
	}
	// A script's command is "runbook:<file>", a file name in the
	// operator's runbooks.dir that no shell sees; the workers do not
	// screen it either, and validate does not.
	if r, bad := ForbiddenRune(o.Command, forbidden); bad && o.Kind != KindScript {
		return FieldError(CodeInvalid, "command", "the command contains the forbidden character %q", r)
	}
	for _, a := range o.Args {
		if r, bad := ForbiddenRune(a, forbidden); bad {
			return FieldError(CodeInvalid, "args", "an argument contains the forbidden character %q", r)
		}
	}
	return nil
}
