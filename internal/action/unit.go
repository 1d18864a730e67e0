package action

import (
	"fmt"
	"slices"
	"strings"
)

// unitTypes are the unit suffixes an action may name: the suffix is
// fixed text in the pattern, so a value can never turn a service into a
// target or a mount.
var unitTypes = []string{".service", ".socket", ".timer", ".path", ".target"}

// unitChars are the characters systemd allows in a unit name.
func unitChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(":_.@\\-", c) >= 0
}

// checkUnitPattern refuses a unit pattern whose fixed text does not pin
// the unit down: it must start with literal text (a value alone could
// name any unit) and end with a literal unit suffix, and its literal text
// must be unit-name characters.
func checkUnitPattern(t Template) error {
	prefix, suffix, n := t.literals()
	if n == 0 {
		return checkUnitName(prefix)
	}
	if prefix == "" || strings.HasPrefix(prefix, "-") || strings.HasPrefix(prefix, ".") {
		return fmt.Errorf("%q must start with fixed text, such as example@", t.String())
	}
	if !slices.ContainsFunc(unitTypes, func(s string) bool { return strings.HasSuffix(suffix, s) }) {
		return fmt.Errorf("%q must end with a fixed unit suffix, one of %v", t.String(), unitTypes)
	}
	for _, p := range t.parts {
		for i := 0; i < len(p.lit); i++ {
			if !unitChar(p.lit[i]) {
				return fmt.Errorf("%q: %q is not allowed in a unit name", t.String(), p.lit[i])
			}
		}
	}
	return nil
}

// checkUnitName validates a rendered unit name as systemd would, and
// more strictly: no path, no "..", a known suffix, at most 255 bytes.
func checkUnitName(u string) error {
	if u == "" || len(u) > 255 {
		return fmt.Errorf("unit name must be 1-255 bytes")
	}
	if u[0] == '-' || u[0] == '.' || strings.Contains(u, "..") {
		return fmt.Errorf("unit name %q is not allowed", u)
	}
	if strings.Contains(u, "@.") {
		// example@.service is the template itself, not an instance.
		return fmt.Errorf("unit name %q has an empty instance", u)
	}
	for i := 0; i < len(u); i++ {
		if !unitChar(u[i]) {
			return fmt.Errorf("unit name %q: %q is not allowed", u, u[i])
		}
	}
	if !slices.ContainsFunc(unitTypes, func(s string) bool { return strings.HasSuffix(u, s) && len(u) > len(s) }) {
		return fmt.Errorf("unit name %q must end with one of %v", u, unitTypes)
	}
	return nil
}

// checkUnitGlob validates a units choices glob: one *, fixed text around
// it that a unit name may hold, and a unit suffix.
func checkUnitGlob(g string) error {
	before, after, ok := strings.Cut(g, "*")
	if !ok || strings.Contains(after, "*") || before == "" {
		return fmt.Errorf("%q: want fixed text, one *, and a unit suffix (example@*.service)", g)
	}
	if err := checkUnitName(before + "x" + after); err != nil {
		return fmt.Errorf("%q: %w", g, err)
	}
	return nil
}

// UnitValue is the value a unit name gives a units param: the part the
// glob's * matched. ok is false when the unit does not match the glob.
func UnitValue(glob, unit string) (value string, ok bool) {
	before, after, _ := strings.Cut(glob, "*")
	if len(unit) <= len(before)+len(after) || !strings.HasPrefix(unit, before) || !strings.HasSuffix(unit, after) {
		return "", false
	}
	return unit[len(before) : len(unit)-len(after)], true
}
