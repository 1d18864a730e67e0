package runbook

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode"
)

// Sanitize turns a request's env_vars into the values a run gets, by
// stage0's rules: names must be [A-Za-z_][A-Za-z0-9_]*; null becomes "";
// numbers keep their JSON text and booleans read True or False (Python's
// str()); control characters other than tab, newline and carriage return
// are removed, judged as runes: C0, DEL (which stage0 kept; no order may
// carry it, order.Validate) and C1 such as U+0085. Objects and arrays are
// refused rather than turned into Python reprs.
func Sanitize(vars map[string]json.RawMessage) (map[string]string, error) {
	out := make(map[string]string, len(vars))
	// In name order, so that a request with several bad entries is
	// refused for the same one every time.
	for _, name := range slices.Sorted(maps.Keys(vars)) {
		raw := vars[name]
		if !ValidEnvName(name) {
			return nil, fmt.Errorf("Invalid environment variable name: %s", printable(name))
		}
		v, err := scalar(raw)
		if err != nil {
			return nil, fmt.Errorf("environment variable %s: %w", name, err)
		}
		out[name] = strings.Map(func(r rune) rune {
			if unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r' {
				return -1
			}
			return r
		}, v)
	}
	return out, nil
}

func scalar(raw json.RawMessage) (string, error) {
	s := strings.TrimSpace(string(raw))
	switch {
	case s == "" || s == "null":
		return "", nil
	case s == "true":
		return "True", nil
	case s == "false":
		return "False", nil
	case s[0] == '"':
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			return "", err
		}
		return v, nil
	case s[0] == '{' || s[0] == '[':
		return "", fmt.Errorf("the value must be a string, number, boolean or null")
	}
	return s, nil // a number: its JSON text
}

// printable shortens a name for an error message and drops what a
// terminal would act on.
func printable(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
}
