package action

import (
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
)

// FuzzActionParams sends an action's params as a request does (raw JSON
// values, Param.Value, then Render), and a unit name a host offers as a
// choice (UnitValue, CheckChoice, Render). A refusal is CodeUnprocessable
// and never repeats the secret; what renders holds only what each
// param's fixed-format rule allows, in its own argv element, and a chosen
// unit renders back to exactly that unit.
func FuzzActionParams(f *testing.F) {
	s, err := New(config.Actions{Bus: "system", Definitions: []config.Action{
		{Name: "restart", Hosts: []string{"*"}, Roles: []string{"ops"},
			Params:  []config.ActionParam{{Name: "inst", Pattern: "[a-z0-9-]{1,32}", Units: "example@*.service"}},
			Systemd: config.ActionSystemd{Verb: "restart", Unit: "example@{inst}.service"}},
		toolAction(),
	}})
	if err != nil {
		f.Fatal(err)
	}
	tool, restart := s.Lookup("tool"), s.Lookup("restart")
	for _, c := range [][6]string{
		{`"abc"`, `3`, `"fast"`, `false`, `"abcdefgh"`, "example@web-1.service"},
		{`"a"`, `10`, `"slow"`, `true`, `"ABCDEFGH12345678"`, "example@1.service"},
		{`"../etc"`, `03`, `"FAST"`, `"true"`, `"short"`, "example@.service"},
		{`"abc\n"`, `1e1`, `"fast "`, `1`, `"abcdefgh;reboot"`, "example@a.b.service"},
		{`"ａｂｃ"`, `-0`, `null`, `tru`, `"abcdefgh\u0000"`, "example@../x.service"},
		{`"abcdefghijklmnopq"`, `99999999999999999999`, `["fast"]`, `{}`, `1`, "other@x.service"},
		{`"abc"`, `"3"`, `"fast"`, `false`, `"abcdefgh"`, "example@web-1.service.service"},
		{`"abc"`, `3`, `"fast"`, `false`, `"abcdefgh;reboot"`, "example@web-1.service"},
		{`"abc"`, `11`, `"fast"`, `false`, `"abcdefgh"`, "example@web-1.service"},
		{` "abc" `, ` 3`, `"fa\u0073t"`, `false`, `"abcdefgh"`, "example@-x.service"},
	} {
		f.Add(c[0], c[1], c[2], c[3], c[4], c[5])
	}
	nameRE := regexp.MustCompile(`^[a-z]{1,16}$`)
	f.Fuzz(func(t *testing.T, name, count, mode, dry, token, unit string) {
		vals := map[string]string{}
		var refused error
		for _, kv := range [][2]string{{"name", name}, {"count", count}, {"mode", mode}, {"dry", dry}, {"token", token}} {
			v, err := tool.Param(kv[0]).Value(json.RawMessage(kv[1]))
			if err != nil {
				refused = err
				break
			}
			if kv[0] != "count" && kv[0] != "dry" {
				// A string value, sent again as its JSON encoding, is
				// the same value.
				again, _ := json.Marshal(v)
				if w, err := tool.Param(kv[0]).Value(again); err != nil || w != v {
					t.Fatalf("%s %q: its encoding %s reads as %q, %v", kv[0], v, again, w, err)
				}
			}
			vals[kv[0]] = v
		}
		secret := vals["token"]
		if refused == nil {
			r, err := tool.Render(vals)
			if err != nil {
				refusedUnprocessable(t, err, secret)
			} else {
				n, cerr := strconv.Atoi(r.Argv[2])
				switch {
				case len(r.Argv) != 6 || r.Argv[0] != "/usr/bin/tool":
					t.Fatalf("rendered %q", r.Argv)
				case !nameRE.MatchString(strings.TrimPrefix(r.Argv[1], "--name=")) || r.Argv[5] != "/srv/"+vals["name"]+".txt":
					t.Fatalf("name %q rendered %q", vals["name"], r.Argv)
				case cerr != nil || n < 1 || n > 10 || strconv.Itoa(n) != r.Argv[2]:
					t.Fatalf("count %q rendered %q", vals["count"], r.Argv[2])
				case r.Argv[3] != "fast" && r.Argv[3] != "slow":
					t.Fatalf("mode %q rendered %q", vals["mode"], r.Argv[3])
				case r.Argv[4] != "--dry=true" && r.Argv[4] != "--dry=false":
					t.Fatalf("dry %q rendered %q", vals["dry"], r.Argv[4])
				case strings.Contains(strings.Join(r.Argv, " "), secret) && len(secret) > 0:
					t.Fatalf("the secret reached argv: %q", r.Argv)
				}
			}
		}
		p := restart.Param("inst")
		v, ok := UnitValue(p.Units, unit)
		if !ok {
			return
		}
		if err := restart.CheckChoice(p, v); err != nil {
			refusedUnprocessable(t, err, "")
			return
		}
		r, err := restart.Render(map[string]string{"inst": v})
		if err != nil {
			t.Fatalf("choice %q passed CheckChoice, Render refuses it: %v", v, err)
		}
		if r.Unit != unit || checkUnitName(r.Unit) != nil {
			t.Fatalf("unit %q chosen as %q renders %q", unit, v, r.Unit)
		}
	})
}

func refusedUnprocessable(t *testing.T, err error, secret string) {
	t.Helper()
	var oe *order.Error
	if !errors.As(err, &oe) || oe.Code != order.CodeUnprocessable {
		t.Fatalf("refused with %v (%T), want CodeUnprocessable", err, err)
	}
	if len(secret) > 0 && strings.Contains(oe.Message, secret) {
		t.Fatalf("the refusal repeats the secret: %s", oe.Message)
	}
}
