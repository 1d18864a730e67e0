package action

import (
	"fmt"
	"strings"
)

// Template is one argv element, env value or unit name: literal text and
// {param} placeholders. It renders to exactly one string, never more, so
// a value can never become a second argument, whatever it holds.
type Template struct {
	parts []part
}

type part struct {
	lit   string
	param string // set for a placeholder
}

// parseTemplate reads s. "{name}" must name a declared param; "{{" and
// "}}" are literal braces; any other brace is an error, so a typo never
// renders as literal text.
func parseTemplate(s string, params map[string]*Param) (Template, error) {
	var t Template
	var lit strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '{' && i+1 < len(s) && s[i+1] == '{':
			lit.WriteByte('{')
			i++
		case c == '}' && i+1 < len(s) && s[i+1] == '}':
			lit.WriteByte('}')
			i++
		case c == '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return Template{}, fmt.Errorf("%q: unclosed {", s)
			}
			name := s[i+1 : i+end]
			if params[name] == nil {
				return Template{}, fmt.Errorf("%q: {%s} is not a param of the action", s, name)
			}
			if lit.Len() > 0 {
				t.parts = append(t.parts, part{lit: lit.String()})
				lit.Reset()
			}
			t.parts = append(t.parts, part{param: name})
			i += end
		case c == '}':
			return Template{}, fmt.Errorf("%q: stray } (write }} for a literal one)", s)
		default:
			lit.WriteByte(c)
		}
	}
	if lit.Len() > 0 {
		t.parts = append(t.parts, part{lit: lit.String()})
	}
	return t, nil
}

// Params lists the placeholders of t in order.
func (t Template) Params() []string {
	var out []string
	for _, p := range t.parts {
		if p.param != "" {
			out = append(out, p.param)
		}
	}
	return out
}

// Render substitutes values into t. Every placeholder must have a value:
// Def.Resolve gives each param one.
func (t Template) Render(values map[string]string) (string, error) {
	var b strings.Builder
	for _, p := range t.parts {
		if p.param == "" {
			b.WriteString(p.lit)
			continue
		}
		v, ok := values[p.param]
		if !ok {
			return "", fmt.Errorf("no value for {%s}", p.param)
		}
		b.WriteString(v)
	}
	return b.String(), nil
}

// String is the template as written, with {name} placeholders.
func (t Template) String() string {
	var b strings.Builder
	for _, p := range t.parts {
		if p.param != "" {
			b.WriteString("{" + p.param + "}")
			continue
		}
		b.WriteString(strings.NewReplacer("{", "{{", "}", "}}").Replace(p.lit))
	}
	return b.String()
}

// literals returns the literal text before the first placeholder and
// after the last one (the whole text when there is none).
func (t Template) literals() (prefix, suffix string, placeholders int) {
	for i, p := range t.parts {
		if p.param != "" {
			placeholders++
			continue
		}
		if placeholders == 0 {
			prefix += p.lit
		}
		if i == len(t.parts)-1 && placeholders > 0 {
			suffix = p.lit
		}
	}
	return prefix, suffix, placeholders
}
