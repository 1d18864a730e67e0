package action

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
)

// Param types.
const (
	TypeString = "string"
	TypeInt    = "int"
	TypeEnum   = "enum"
	TypeBool   = "bool"
)

// MaxValueBytes caps every value, whatever its rules say: a value ends up
// in an argv element, an environment variable or a unit name.
const MaxValueBytes = 1024

// Param is one compiled parameter.
type Param struct {
	Name        string
	Title       string
	Description string
	Type        string
	Pattern     string // as written; re is it anchored at both ends
	Min, Max    *int64
	Values      []string
	Default     *string
	Secret      bool
	Units       string

	re *regexp.Regexp
}

var paramNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// intRE is the only spelling of an int: no sign on zero, no leading
// zeros, no "+", no spaces, so one number has one rendering. Up to 19
// digits, as int64 has; Check refuses one past its range.
var intRE = regexp.MustCompile(`^(0|-?[1-9][0-9]{0,18})$`)

func compileParam(cp config.ActionParam) (*Param, error) {
	p := &Param{Name: cp.Name, Title: cp.Title, Description: cp.Description, Type: cp.Type,
		Pattern: cp.Pattern, Min: cp.Min, Max: cp.Max, Values: slices.Clone(cp.Values), Default: cp.Default,
		Secret: cp.Secret, Units: cp.Units}
	if !paramNameRE.MatchString(p.Name) {
		return nil, fmt.Errorf("name %q: want [a-z_][a-z0-9_]*", p.Name)
	}
	if p.Title == "" {
		p.Title = p.Name
	}
	if p.Type == "" {
		p.Type = TypeString
	}
	switch p.Type {
	case TypeString:
		// A free-text value would let "../../etc/shadow" or "-rf" into a
		// command; every string says what it may be.
		if p.Pattern == "" {
			return nil, fmt.Errorf("param %q: a string param needs a pattern", p.Name)
		}
		re, err := regexp.Compile(`^(?:` + p.Pattern + `)$`)
		if err != nil {
			return nil, fmt.Errorf("param %q: bad pattern %q: %w", p.Name, p.Pattern, err)
		}
		p.re = re
	case TypeInt:
	case TypeEnum:
		if len(p.Values) == 0 {
			return nil, fmt.Errorf("param %q: an enum needs values", p.Name)
		}
		for i, v := range p.Values {
			if err := plain(v); err != nil {
				return nil, fmt.Errorf("param %q: enum value %q: %w", p.Name, v, err)
			}
			if slices.Contains(p.Values[:i], v) {
				return nil, fmt.Errorf("param %q: enum value %q is listed twice", p.Name, v)
			}
		}
	case TypeBool:
	default:
		return nil, fmt.Errorf("param %q: type %q: want string, int, enum or bool", p.Name, p.Type)
	}
	if p.Type != TypeString && p.Pattern != "" {
		return nil, fmt.Errorf("param %q: pattern applies to strings only", p.Name)
	}
	if p.Type != TypeEnum && len(p.Values) > 0 {
		return nil, fmt.Errorf("param %q: values apply to enums only", p.Name)
	}
	if (p.Type == TypeEnum || p.Type == TypeBool) && (p.Min != nil || p.Max != nil) {
		return nil, fmt.Errorf("param %q: min and max apply to strings and ints only", p.Name)
	}
	if p.Min != nil && p.Max != nil && *p.Min > *p.Max {
		return nil, fmt.Errorf("param %q: min is above max", p.Name)
	}
	if p.Units != "" {
		if p.Type != TypeString || p.Secret {
			return nil, fmt.Errorf("param %q: units choices apply to non-secret strings only", p.Name)
		}
		if err := checkUnitGlob(p.Units); err != nil {
			return nil, fmt.Errorf("param %q: units: %w", p.Name, err)
		}
	}
	if p.Default != nil {
		if err := p.Check(*p.Default); err != nil {
			// Check's message names the rule, never the value (a secret's).
			msg := string(order.ErrorCode(err))
			var oe *order.Error
			if errors.As(err, &oe) {
				msg = strings.TrimPrefix(oe.Message, "param "+p.Name+": ")
			}
			return nil, fmt.Errorf("param %q: default: %s", p.Name, msg)
		}
	}
	return p, nil
}

// plain refuses what no value may hold, whatever its rules: invalid
// UTF-8, NUL and other control characters (newlines and the C1 set
// included), and more than MaxValueBytes.
func plain(v string) error {
	switch {
	case len(v) > MaxValueBytes:
		return fmt.Errorf("longer than %d bytes", MaxValueBytes)
	case !utf8.ValidString(v):
		return fmt.Errorf("not valid UTF-8")
	case order.HasControl(v, false) || strings.ContainsFunc(v, unicode.IsControl):
		return fmt.Errorf("contains control characters")
	}
	return nil
}

// Check validates one value against the param's rules. The error is an
// *order.Error with CodeUnprocessable naming the param
// (details.field = "params.<name>"); it never repeats a secret value.
func (p *Param) Check(v string) error {
	bad := func(format string, args ...any) error {
		e := order.FieldError(order.CodeUnprocessable, "params."+p.Name, "param %s: "+format, append([]any{p.Name}, args...)...)
		e.Details["param"] = p.Name
		return e
	}
	if err := plain(v); err != nil {
		return bad("%s", err.Error())
	}
	switch p.Type {
	case TypeString:
		n := int64(len(v))
		if p.Min != nil && n < *p.Min {
			return bad("shorter than %d bytes", *p.Min)
		}
		if p.Max != nil && n > *p.Max {
			return bad("longer than %d bytes", *p.Max)
		}
		if !p.re.MatchString(v) {
			if p.Secret {
				return bad("does not match its pattern")
			}
			return bad("%q does not match %s", v, p.Pattern)
		}
	case TypeInt:
		if !intRE.MatchString(v) {
			return bad("not an integer")
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return bad("outside the 64-bit range")
		}
		if p.Min != nil && n < *p.Min {
			return bad("below the minimum %d", *p.Min)
		}
		if p.Max != nil && n > *p.Max {
			return bad("above the maximum %d", *p.Max)
		}
	case TypeEnum:
		if !slices.Contains(p.Values, v) {
			return bad("not one of %q", p.Values)
		}
	case TypeBool:
		if v != "true" && v != "false" {
			return bad("want true or false")
		}
	}
	return nil
}

// Resolve validates a run's values: every name a param of d, every value
// valid, defaults for the ones left out. The first problem is returned,
// naming the param.
func (d *Def) Resolve(in map[string]string) (map[string]string, error) {
	for _, name := range sortedKeys(in) {
		if d.Param(name) == nil {
			e := order.FieldError(order.CodeUnprocessable, "params."+printable(name), "action %s has no param %q", d.Name, printable(name))
			e.Details["param"] = printable(name)
			return nil, e
		}
	}
	out := make(map[string]string, len(d.Params))
	for _, p := range d.Params {
		v, ok := in[p.Name]
		if !ok {
			if p.Default == nil {
				e := order.FieldError(order.CodeUnprocessable, "params."+p.Name, "param %s is required", p.Name)
				e.Details["param"] = p.Name
				return nil, e
			}
			v = *p.Default
		}
		if err := p.Check(v); err != nil {
			return nil, err
		}
		out[p.Name] = v
	}
	return out, nil
}

// Split separates resolved values into those history may keep and the
// secret ones, which travel only until the order is terminal.
func (d *Def) Split(values map[string]string) (public, secret map[string]string) {
	public, secret = map[string]string{}, map[string]string{}
	for k, v := range values {
		if p := d.Param(k); p != nil && p.Secret {
			secret[k] = v
		} else {
			public[k] = v
		}
	}
	return public, secret
}

func printable(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	b := []rune{}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			r = '?'
		}
		b = append(b, r)
	}
	return string(b)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
