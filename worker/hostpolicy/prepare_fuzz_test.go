package hostpolicy

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
)

// FuzzPrepare gives the worker's own check of an exec order (what it
// re-checks whatever the API let through) a command, arguments and a user
// from the fuzzer, on the fixture's filesystem with an allow-list of ls
// and id and a deny of everything behind systemctl. Whatever it accepts
// runs usr/bin/ls or usr/bin/id, found in a command_path directory, with
// arguments free of control characters and of the forbidden characters;
// whatever it refuses is an *order.Error with a 4xx code.
func FuzzPrepare(f *testing.F) {
	fx := newFixture(f)
	cfg := fx.cfg()
	cfg.Allow = []string{`(^|/)(ls|id)( |$)`}
	cfg.Deny = []string{`systemctl`}
	cfg.ForbiddenChars = ";|&$`"
	p, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	for _, c := range []string{
		"ls", "id", "/bin/ls", fx.path("usr/bin/ls"), fx.path("bin/ls"), fx.root + "/usr/bin//ls",
		fx.path("usr/bin") + "/../bin/ls", fx.path("usr/bin") + "/../../outside/evil", "halt", "shutdown",
		fx.path("sbin/shutdown"), "systemctl", "escape", "notexec", "subdir/tool", "../outside/evil", "./ls",
		"%2e%2e%2fls", "ls%2f", "l\x00s", "ls\n", "\x1b[31mls", "l\xffs", ".", "..", "", "ls ", " ls", "LS",
	} {
		f.Add(c, "-l", "", "")
	}
	f.Add("ls", "-l; rm -rf /", "", "")
	f.Add("ls", "-l", "", "LD_PRELOAD=/tmp/x.so")
	f.Add("ls", "\u202e", "nobody", "PATH=/tmp")
	f.Add("id", "-u", "root", "BASH_FUNC_ls%%=() { :; }")
	f.Add("id", "", "no body", "A=b\x00c")
	f.Add("id", "-u", "", "Path=/tmp\tld_preload=x\tLANG=C\tHOME=/root")
	f.Fuzz(func(t *testing.T, command, arg, runAs, env string) {
		o := &order.Order{Kind: order.KindExec, Host: "h", Command: command, RunAs: runAs}
		if arg != "" {
			o.Args = strings.Split(arg, "\t")
		}
		if env != "" {
			o.Env = map[string]string{}
			for _, kv := range strings.Split(env, "\t") {
				k, v, _ := strings.Cut(kv, "=")
				o.Env[k] = v
			}
		}
		prep, err := p.Prepare(o)
		if err != nil {
			refusedAs4xx(t, command, err)
			return
		}
		real := prep.Req.Path
		if prep.User != "" && prep.Req.Argv[0] == "sudo" {
			real = prep.ResolvedPath
		}
		if real != fx.path("usr/bin/ls") && real != fx.path("usr/bin/id") {
			t.Fatalf("command %q (args %q) accepted as %s, not ls or id", command, o.Args, real)
		}
		dir := filepath.Dir(prep.ResolvedPath)
		if dir != fx.path("usr/bin") && dir != fx.path("usr/sbin") {
			t.Fatalf("command %q resolved to %s, outside command_path", command, prep.ResolvedPath)
		}
		paths := 0
		for _, kv := range prep.Req.Env {
			k, v, _ := strings.Cut(kv, "=")
			if _, denied := order.EnvDenied(k, cfg.EnvDeny); denied && k != "PATH" && k != "HOME" && k != "USER" && k != "LOGNAME" {
				t.Fatalf("env %q set %s", env, kv)
			}
			if k == "PATH" {
				paths++
				if v != strings.Join(p.commandPath, ":") {
					t.Fatalf("env %q set %s", env, kv)
				}
			}
			if order.HasControl(v, true) {
				t.Fatalf("env %q set %q", env, kv)
			}
		}
		if paths != 1 && prep.Req.Argv[0] != "sudo" {
			t.Fatalf("env %q gives %d PATHs: %q", env, paths, prep.Req.Env)
		}
		for _, a := range o.Args {
			if order.HasControl(a, true) || strings.ContainsAny(a, cfg.ForbiddenChars) {
				t.Fatalf("argument %q accepted", a)
			}
		}
	})
}

// refusedAs4xx fails t unless err is an *order.Error of a client's code.
func refusedAs4xx(t *testing.T, in string, err error) {
	t.Helper()
	oe, ok := err.(*order.Error)
	if !ok {
		t.Fatalf("%q refused with %T %v, not an *order.Error", in, err, err)
	}
	switch oe.Code {
	case order.CodeInvalid, order.CodeForbidden, order.CodeUnprocessable:
	default:
		t.Fatalf("%q refused with code %q: %v", in, oe.Code, err)
	}
}

// FuzzPrepareAction gives the worker's check of an action order (what a
// forged row or another API's config could carry) an action's name, a
// host, a public and a secret value from the fuzzer, against the
// worker's own restart action. Whatever it accepts restarts
// example@<four digits>.service on a web host, rendered from its own
// config; whatever it refuses is a client's 4xx code.
func FuzzPrepareAction(f *testing.F) {
	defaultKey := "abcd"
	c := config.Default()
	c.Worker.CommandPath = []string{"/usr/bin", "/bin"}
	c.Actions.Definitions = []config.Action{{Name: "restart", Hosts: []string{"web-*"}, Roles: []string{"ops"},
		Params:  []config.ActionParam{{Name: "id", Pattern: "[0-9]{4}"}, {Name: "key", Pattern: "[a-z]{4,8}", Secret: true, Default: &defaultKey}},
		Systemd: config.ActionSystemd{Verb: "restart", Unit: "example@{id}.service"}}}
	p, err := FromConfig(c)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range [][6]string{
		{"restart", "web-1", "id", "0042", "key", "abcdefg"},
		{"restart", "db-1", "id", "0042", "", ""},
		{"restart", "web-1", "key", "abcd", "id", "0042"},
		{"restart", "web-1", "id", "0042;reboot", "", ""},
		{"restart", "web-1", "id", "٠٠٤٢", "key", "ABCD"},
		{"Restart", "web-1", "id", "0042", "", ""},
		{"restart\x00", "web-*", "ID", "0042", "id", "0043"},
		{"restart", "web-1", "id", "0042\n", "key", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4], s[5])
	}
	unitRE := regexp.MustCompile(`^systemd:restart:example@[0-9]{4}\.service$`)
	f.Fuzz(func(t *testing.T, name, host, param, value, secret, secretValue string) {
		o := &order.Order{Kind: order.KindAction, Host: host, Command: "action:" + name,
			Action: &order.Action{Name: name, Params: map[string]string{param: value}}}
		if secret != "" {
			o.Action.Secrets = map[string]string{secret: secretValue}
		}
		prep, err := p.Prepare(o)
		if err != nil {
			refusedAs4xx(t, name, err)
			return
		}
		if prep.Native == nil || !unitRE.MatchString(prep.ResolvedPath) || !strings.HasPrefix(host, "web-") {
			t.Fatalf("action %q on %q with %q=%q, secret %q=%q: prepared %q", name, host, param, value, secret, secretValue, prep.ResolvedPath)
		}
	})
}
