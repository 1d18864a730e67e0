package action

import (
	"errors"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
)

func ptr[T any](v T) *T { return &v }

// toolAction has one param of each type, a secret among them, rendered
// into its command and its environment.
func toolAction() config.Action {
	return config.Action{Name: "tool", Hosts: []string{"web-*"}, Principals: []string{"alice"},
		Params: []config.ActionParam{
			{Name: "name", Pattern: "[a-z]+", Max: ptr[int64](16)},
			{Name: "count", Type: "int", Min: ptr[int64](1), Max: ptr[int64](10), Default: ptr("3")},
			{Name: "mode", Type: "enum", Values: []string{"fast", "slow"}, Default: ptr("fast")},
			{Name: "dry", Type: "bool", Default: ptr("false")},
			{Name: "token", Pattern: "[A-Za-z0-9]{8,32}", Secret: true, Default: ptr("defaulttoken")},
		},
		Command: []string{"/usr/bin/tool", "--name={name}", "{count}", "{mode}", "--dry={dry}", "/srv/{name}.txt"},
		Env:     []config.ActionEnv{{Name: "TOOL_TOKEN", Value: "{token}"}}}
}

// testSet has one action per param type, plus a systemd verb.
func testSet(t *testing.T) *Set {
	t.Helper()
	s, err := New(config.Actions{Bus: "system", Definitions: []config.Action{
		{Name: "restart", Hosts: []string{"*"}, Roles: []string{"ops"},
			Params:  []config.ActionParam{{Name: "id", Pattern: "[0-9]{4}"}},
			Systemd: config.ActionSystemd{Verb: "restart", Unit: "example@{id}.service"}},
		toolAction(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRenderRefusesInjection tries every way to smuggle something into a
// command through each param type: shell metacharacters, spaces,
// newlines, path traversal, unicode look-alikes, over-long values. Each
// is refused with 422 naming the param; nothing renders.
func TestRenderRefusesInjection(t *testing.T) {
	s := testSet(t)
	long := strings.Repeat("a", MaxValueBytes+1)
	cases := []struct {
		action, param, value string
	}{
		// string with a pattern
		{"restart", "id", "0042;reboot"},
		{"restart", "id", "0042 "},
		{"restart", "id", "00 42"},
		{"restart", "id", "0042\n"},
		{"restart", "id", "0042\nreboot"},
		{"restart", "id", "../../etc"},
		{"restart", "id", "٠٠٤٢"}, // Arabic-Indic digits
		{"restart", "id", "００４２"}, // fullwidth digits
		{"restart", "id", "0042\x00"},
		{"restart", "id", long},
		{"restart", "id", ""},
		{"restart", "id", "-0042"},
		{"tool", "name", "abc;id"},
		{"tool", "name", "a b"},
		{"tool", "name", "../etc/passwd"},
		{"tool", "name", "abc\n"},
		{"tool", "name", "ábc"},
		{"tool", "name", strings.Repeat("a", 17)},
		{"tool", "name", "\xff"},
		// int
		{"tool", "count", "3;reboot"},
		{"tool", "count", " 3"},
		{"tool", "count", "3\n"},
		{"tool", "count", "03"},
		{"tool", "count", "+3"},
		{"tool", "count", "0x3"},
		{"tool", "count", "11"},
		{"tool", "count", "0"},
		{"tool", "count", "../3"},
		{"tool", "count", "３"},
		{"tool", "count", "99999999999999999999999"},
		// enum
		{"tool", "mode", "fast;reboot"},
		{"tool", "mode", "fast "},
		{"tool", "mode", "fast\n"},
		{"tool", "mode", "FAST"},
		{"tool", "mode", "../fast"},
		{"tool", "mode", "fаst"}, // Cyrillic а
		{"tool", "mode", long},
		// bool
		{"tool", "dry", "true;reboot"},
		{"tool", "dry", "true "},
		{"tool", "dry", "1"},
		{"tool", "dry", "True"},
		{"tool", "dry", "true\n"},
		{"tool", "dry", "trüe"},
		// secret
		{"tool", "token", "abcdefgh;id"},
		{"tool", "token", "abcd efgh"},
		{"tool", "token", "abcdefgh\n"},
		{"tool", "token", "../../abcdefgh"},
		{"tool", "token", "abcdéfgh"},
		{"tool", "token", long},
	}
	for _, c := range cases {
		vals := map[string]string{"name": "abc"}
		vals[c.param] = c.value
		if c.action == "restart" {
			vals = map[string]string{c.param: c.value}
		}
		r, err := s.Lookup(c.action).Render(vals)
		if err == nil {
			t.Errorf("%s %s=%q rendered %+v, want a refusal", c.action, c.param, c.value, r)
			continue
		}
		var oe *order.Error
		if !errors.As(err, &oe) || oe.Code != order.CodeUnprocessable || oe.Details["field"] != "params."+c.param {
			t.Errorf("%s %s=%.80q: %.200v, want unprocessable on params.%s", c.action, c.param, c.value, err, c.param)
		}
		if c.param == "token" && strings.Contains(err.Error(), c.value) {
			t.Errorf("refusal of a secret repeats its value: %v", err)
		}
	}
}

// TestRenderWholeElements checks that valid values fill whole argv
// elements and nothing else, defaults apply, and the unit name is fixed
// text around the value.
func TestRenderWholeElements(t *testing.T) {
	s := testSet(t)
	r, err := s.Lookup("tool").Render(map[string]string{"name": "abc", "count": "10", "dry": "true", "token": "s3cretvalue"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/usr/bin/tool", "--name=abc", "10", "fast", "--dry=true", "/srv/abc.txt"}
	if strings.Join(r.Argv, "\x00") != strings.Join(want, "\x00") {
		t.Errorf("argv %q, want %q", r.Argv, want)
	}
	if r.Env["TOOL_TOKEN"] != "s3cretvalue" {
		t.Errorf("env %v", r.Env)
	}
	for _, a := range r.Argv {
		if strings.Contains(a, "s3cret") {
			t.Errorf("a secret reached argv: %q", r.Argv)
		}
	}
	u, err := s.Lookup("restart").Render(map[string]string{"id": "0042"})
	if err != nil || u.Unit != "example@0042.service" || u.Verb != "restart" {
		t.Errorf("unit %+v, %v", u, err)
	}
	if _, err := s.Lookup("restart").Render(map[string]string{"id": "0042", "extra": "x"}); err == nil {
		t.Error("an unknown param was accepted")
	}
	if _, err := s.Lookup("restart").Render(nil); err == nil {
		t.Error("a missing required param was accepted")
	}
}

// TestNewRefusesUnsafeDefinitions: definitions that would let a value
// decide more than it should do not compile.
func TestNewRefusesUnsafeDefinitions(t *testing.T) {
	base := func() config.Action {
		return config.Action{Name: "a", Hosts: []string{"*"}, Roles: []string{"ops"},
			Params:  []config.ActionParam{{Name: "id", Pattern: "[0-9]+"}},
			Command: []string{"/bin/echo", "{id}"}}
	}
	cases := map[string]func(a *config.Action){
		"string without pattern": func(a *config.Action) { a.Params[0].Pattern = "" },
		"bad regex":              func(a *config.Action) { a.Params[0].Pattern = "[" },
		"unknown placeholder":    func(a *config.Action) { a.Command[1] = "{nope}" },
		"stray brace":            func(a *config.Action) { a.Command[1] = "{id" },
		"placeholder in argv[0]": func(a *config.Action) { a.Command[0] = "/bin/{id}" },
		"empty argv[0]":          func(a *config.Action) { a.Command[0] = "" },
		"relative path argv[0]":  func(a *config.Action) { a.Command[0] = "bin/echo" },
		"dot-dot in argv[0]":     func(a *config.Action) { a.Command[0] = "/usr/bin/../bin/echo" },
		"secret in argv":         func(a *config.Action) { a.Params[0].Secret = true },
		"both command and verb":  func(a *config.Action) { a.Systemd = config.ActionSystemd{Verb: "restart", Unit: "x@{id}.service"} },
		"unit value alone": func(a *config.Action) {
			a.Command = nil
			a.Systemd = config.ActionSystemd{Verb: "restart", Unit: "{id}"}
		},
		"unit suffix from value": func(a *config.Action) {
			a.Command = nil
			a.Systemd = config.ActionSystemd{Verb: "restart", Unit: "x@{id}"}
		},
		"unknown verb": func(a *config.Action) {
			a.Command = nil
			a.Systemd = config.ActionSystemd{Verb: "kill", Unit: "x@{id}.service"}
		},
		"no hosts":            func(a *config.Action) { a.Hosts = nil },
		"bad name":            func(a *config.Action) { a.Name = "A B" },
		"enum without values": func(a *config.Action) { a.Params[0] = config.ActionParam{Name: "id", Type: "enum"} },
		"enum value twice": func(a *config.Action) {
			a.Params[0] = config.ActionParam{Name: "id", Type: "enum", Values: []string{"a", "b", "a"}}
		},
		"default fails its rules": func(a *config.Action) { a.Params[0].Default = ptr("x") },
		"limit runs without per":  func(a *config.Action) { a.Limit.Runs = 3 },
		"units of a param the unit does not use": func(a *config.Action) {
			a.Command = nil
			a.Params = append(a.Params, config.ActionParam{Name: "other", Pattern: "[0-9]+", Units: "other@*.service"})
			a.Systemd = config.ActionSystemd{Verb: "restart", Unit: "example@{id}.service"}
		},
		"units other than the unit": func(a *config.Action) {
			a.Command = nil
			a.Params[0].Units = "other@*.service"
			a.Systemd = config.ActionSystemd{Verb: "restart", Unit: "example@{id}.service"}
		},
	}
	for name, mut := range cases {
		a := base()
		mut(&a)
		if _, err := New(config.Actions{Definitions: []config.Action{a}}); err == nil {
			t.Errorf("%s: compiled", name)
		}
	}
	if _, err := New(config.Actions{Definitions: []config.Action{base()}}); err != nil {
		t.Fatalf("the base definition: %v", err)
	}
	// A default that fails says which rule, not only "unprocessable"; a
	// secret's never shows its value.
	a := base()
	a.Params[0].Default = ptr("x-default")
	if _, err := New(config.Actions{Definitions: []config.Action{a}}); err == nil ||
		!strings.Contains(err.Error(), "does not match [0-9]+") || strings.Contains(err.Error(), "unprocessable") {
		t.Errorf("a default that fails its pattern: %v", err)
	}
	a.Params[0].Secret, a.Command = true, []string{"/bin/true"}
	a.Env = []config.ActionEnv{{Name: "ID", Value: "{id}"}}
	if _, err := New(config.Actions{Definitions: []config.Action{a}}); err == nil || strings.Contains(err.Error(), "x-default") {
		t.Errorf("a secret default that fails its pattern: %v", err)
	}
}

func TestUnitValue(t *testing.T) {
	for unit, want := range map[string]string{"example@0042.service": "0042", "example@.service": "", "other@1.service": ""} {
		got, ok := UnitValue("example@*.service", unit)
		if got != want || ok != (want != "") {
			t.Errorf("%s: %q %v", unit, got, ok)
		}
	}
}

// TestParamValues: what no value may hold, whatever a param's pattern
// allows (C1 controls too), and a JSON type that differs from the
// param's (a number for a string param, true for an int one) is refused.
func TestParamValues(t *testing.T) {
	free := &Param{Name: "free", Type: TypeString}
	for _, v := range []string{"a\u0085b", "a\u009bb", "a\x7fb", "a\tb"} {
		if err := plain(v); err == nil {
			t.Errorf("plain(%q) accepted a control character", v)
		}
	}
	if err := plain("naïve ✓"); err != nil {
		t.Errorf("plain refused printable text: %v", err)
	}
	for _, c := range []struct {
		typ, raw string
		ok       bool
	}{
		{TypeString, `"12"`, true}, {TypeString, `12`, false}, {TypeString, `true`, false},
		{TypeInt, `12`, true}, {TypeInt, `"12"`, true}, {TypeInt, `false`, false},
		{TypeBool, `true`, true}, {TypeBool, `"true"`, true}, {TypeBool, `1`, false},
		{TypeEnum, `"fast"`, true}, {TypeEnum, `3`, false},
	} {
		free.Type = c.typ
		if _, err := free.Value([]byte(c.raw)); (err == nil) != c.ok {
			t.Errorf("%s param given %s: error %v, want accepted %v", c.typ, c.raw, err, c.ok)
		}
	}
	// An int is any int64, 19 digits included (a Snowflake id); one past
	// the range says so rather than "not an integer".
	num := &Param{Name: "n", Type: TypeInt}
	for _, v := range []string{"1000000000000000000", "9223372036854775807", "-9223372036854775808"} {
		if _, err := num.Value([]byte(v)); err != nil {
			t.Errorf("int param given %s: %v", v, err)
		}
		if err := num.Check(v); err != nil {
			t.Errorf("Check(%s): %v", v, err)
		}
	}
	if err := num.Check("9223372036854775808"); err == nil || !strings.Contains(err.Error(), "range") {
		t.Errorf("Check of a value past int64: %v, want a refusal naming the range", err)
	}
	if err := num.Check("12345678901234567890"); err == nil {
		t.Errorf("Check of 20 digits accepted it")
	}
}

// TestUnitValuesTheWorkerWouldRefuse: a value the param's own pattern
// lets through but that makes no unit name (a path, a glob, the template
// itself) is refused when the API authorizes the run, as the worker
// would refuse it.
func TestUnitValuesTheWorkerWouldRefuse(t *testing.T) {
	s, err := New(config.Actions{Definitions: []config.Action{{Name: "loose", Hosts: []string{"*"}, Roles: []string{"ops"},
		Params:  []config.ActionParam{{Name: "id", Pattern: ".*"}},
		Systemd: config.ActionSystemd{Verb: "restart", Unit: "example@{id}.service"}}}})
	if err != nil {
		t.Fatal(err)
	}
	ops := auth.Principal{Name: "bob", Roles: []string{"ops"}}
	for _, v := range []string{"x/y", "*", "", "..", "a b"} {
		o := &order.Order{Host: "h", Kind: order.KindAction, Action: &order.Action{Name: "loose", Params: map[string]string{"id": v}}}
		if _, err := s.Authorize(ops, o); order.ErrorCode(err) != order.CodeUnprocessable {
			t.Errorf("id %q: %v, want unprocessable", v, err)
		}
	}
	o := &order.Order{Host: "h", Kind: order.KindAction, Action: &order.Action{Name: "loose", Params: map[string]string{"id": "0042"}}}
	if _, err := s.Authorize(ops, o); err != nil {
		t.Errorf("id 0042: %v", err)
	}
}
