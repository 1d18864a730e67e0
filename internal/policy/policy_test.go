package policy

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
)

const (
	readOnly = `^(uptime|df|free|ps)( |$)`
	noPower  = `^(shutdown|reboot|poweroff|halt)( |$)`
	noInit   = `^init [06]( |$)`
	noRmRf   = `^rm .*-rf`
	restart  = `^systemctl restart example@[0-9]{4}\.service$`
)

func testRules() []config.Rule {
	return []config.Rule{
		{Name: "monitor-readonly", Roles: []string{"monitor"}, Hosts: []string{"*"}, Allow: []string{readOnly}},
		{Name: "admin", Roles: []string{"admin"}, Hosts: []string{"*"}, Allow: []string{`.*`},
			Deny: []string{noPower, noInit}, RunAs: []string{"", "root", "www-data"}},
		{Name: "web-restart", Principals: []string{"deployer"}, Hosts: []string{"web-*"}, Allow: []string{restart},
			RunAs: []string{"restarter"}, MaxTimeout: time.Minute},
		{Name: "auditor", Principals: []string{"auditor"}, Hosts: []string{"*"}, Allow: []string{`.*`}, DryRunOnly: true},
		{Name: "web-ls", Principals: []string{"deployer"}, Hosts: []string{"web-?"}, Allow: []string{`^ls( |$)`}},
		{Name: "everyone-no-rm", Principals: []string{"*"}, Deny: []string{noRmRf}},
		{Name: "inert", Hosts: []string{"*"}, Allow: []string{`.*`}}, // no principals or roles: applies to nobody
	}
}

func TestDecide(t *testing.T) {
	e, err := New(testRules())
	if err != nil {
		t.Fatal(err)
	}
	monitor := auth.Principal{Name: "grafana", Roles: []string{"monitor"}, Kind: auth.KindToken}
	admin := auth.Principal{Name: "root-ops", Roles: []string{"admin"}, Kind: auth.KindJWT}
	deployer := auth.Principal{Name: "deployer", Kind: auth.KindToken}
	auditor := auth.Principal{Name: "auditor", Kind: auth.KindToken}
	stranger := auth.Principal{Name: "stranger", Kind: auth.KindToken}
	both := auth.Principal{Name: "lead", Roles: []string{"monitor", "admin"}}
	restartReq := func(mod func(*Request)) Request {
		r := Request{Principal: deployer, Host: "web-3", Command: "systemctl",
			Args: []string{"restart", "example@0042.service"}, RunAs: "restarter", Timeout: 30 * time.Second}
		if mod != nil {
			mod(&r)
		}
		return r
	}

	tests := []struct {
		name    string
		req     Request
		allow   bool
		matched []string
		msg     string // substring of the denial message
	}{
		// Monitor: read-only commands only.
		{"monitor uptime", Request{Principal: monitor, Host: "db-1", Command: "uptime"}, true,
			[]string{"monitor-readonly:allow:" + readOnly}, ""},
		{"monitor df -h", Request{Principal: monitor, Host: "db-1", Command: "df", Args: []string{"-h"}}, true,
			[]string{"monitor-readonly:allow:" + readOnly}, ""},
		{"monitor uptime with resolved path", Request{Principal: monitor, Host: "db-1", Command: "uptime", ResolvedPath: "/usr/bin/uptime"}, true,
			[]string{"monitor-readonly:allow:" + readOnly}, ""},
		{"monitor ls", Request{Principal: monitor, Host: "db-1", Command: "ls"}, false, []string{}, "no policy rule allows"},
		{"monitor uptimex", Request{Principal: monitor, Host: "db-1", Command: "uptimex"}, false, []string{}, "no policy rule allows"},
		{"monitor cannot borrow a read-only basename", Request{Principal: monitor, Host: "db-1", Command: "/tmp/evil/uptime"}, false, []string{}, "no policy rule allows"},
		{"monitor rm -rf denied for everyone", Request{Principal: monitor, Host: "db-1", Command: "rm", Args: []string{"-rf", "/"}}, false,
			[]string{"everyone-no-rm:deny:" + noRmRf}, `denied by rule "everyone-no-rm"`},
		{"monitor run_as root", Request{Principal: monitor, Host: "db-1", Command: "uptime", RunAs: "root"}, false,
			[]string{"monitor-readonly:refused:run_as=root"}, `run_as "root" not allowed by rule "monitor-readonly"`},

		// Admin: anything but power management, whatever the spelling.
		{"admin ls", Request{Principal: admin, Host: "db-1", Command: "ls", Args: []string{"-la"}}, true, []string{"admin:allow:.*"}, ""},
		{"admin shutdown", Request{Principal: admin, Host: "db-1", Command: "shutdown", Args: []string{"-h", "now"}}, false,
			[]string{"admin:deny:" + noPower}, `denied by rule "admin"`},
		{"admin /sbin/shutdown (absolute path bypass)", Request{Principal: admin, Host: "db-1", Command: "/sbin/shutdown", Args: []string{"-h", "now"}}, false,
			[]string{"admin:deny:" + noPower}, `denied by rule "admin"`},
		{"admin relative path with dot-dots", Request{Principal: admin, Host: "db-1", Command: "../../sbin//shutdown"}, false,
			[]string{"admin:deny:" + noPower}, "denied"},
		{"admin path with trailing dot", Request{Principal: admin, Host: "db-1", Command: "/sbin/reboot/."}, false,
			[]string{"admin:deny:" + noPower}, "denied"},
		{"admin alias resolving to shutdown", Request{Principal: admin, Host: "db-1", Command: "sd", ResolvedPath: "/usr/sbin/shutdown"}, false,
			[]string{"admin:deny:" + noPower}, "denied"},
		{"admin reboot", Request{Principal: admin, Host: "db-1", Command: "reboot"}, false, []string{"admin:deny:" + noPower}, "denied"},
		{"admin poweroff", Request{Principal: admin, Host: "db-1", Command: "/usr/sbin/poweroff"}, false, []string{"admin:deny:" + noPower}, "denied"},
		{"admin halt", Request{Principal: admin, Host: "db-1", Command: "halt", Args: []string{"-p"}}, false, []string{"admin:deny:" + noPower}, "denied"},
		{"admin init 0", Request{Principal: admin, Host: "db-1", Command: "init", Args: []string{"0"}}, false, []string{"admin:deny:" + noInit}, "denied"},
		{"admin /sbin/init 6", Request{Principal: admin, Host: "db-1", Command: "/sbin/init", Args: []string{"6"}}, false, []string{"admin:deny:" + noInit}, "denied"},
		{"admin init 3", Request{Principal: admin, Host: "db-1", Command: "init", Args: []string{"3"}}, true, []string{"admin:allow:.*"}, ""},
		{"admin shutdownx is another command", Request{Principal: admin, Host: "db-1", Command: "shutdownx"}, true, []string{"admin:allow:.*"}, ""},
		{"admin run_as root", Request{Principal: admin, Host: "db-1", Command: "id", RunAs: "root"}, true, []string{"admin:allow:.*"}, ""},
		{"admin run_as nobody", Request{Principal: admin, Host: "db-1", Command: "id", RunAs: "nobody"}, false,
			[]string{"admin:refused:run_as=nobody"}, `run_as "nobody" not allowed by rule "admin"`},
		{"deny wins over another rule's allow", Request{Principal: admin, Host: "db-1", Command: "rm", Args: []string{"-rf", "/srv"}}, false,
			[]string{"everyone-no-rm:deny:" + noRmRf}, "denied"},
		{"newline in an argument cannot dodge .*", Request{Principal: admin, Host: "db-1", Command: "rm", Args: []string{"x\n", "-rf"}}, false,
			[]string{"everyone-no-rm:deny:" + noRmRf}, "denied"},
		{"deny holds whatever other roles allow", Request{Principal: both, Host: "db-1", Command: "/sbin/halt"}, false,
			[]string{"admin:deny:" + noPower}, "denied"},
		{"every allowing rule is listed", Request{Principal: both, Host: "db-1", Command: "ps", Args: []string{"aux"}}, true,
			[]string{"monitor-readonly:allow:" + readOnly, "admin:allow:.*"}, ""},

		// Deployer: one fixed-format command on web hosts, as one user, briefly.
		{"restart allowed", restartReq(nil), true, []string{"web-restart:allow:" + restart}, ""},
		{"restart on a db host", restartReq(func(r *Request) { r.Host = "db-1" }), false,
			[]string{"web-restart:refused:host=db-1"}, `host "db-1" not allowed by rule "web-restart"`},
		{"restart as default user", restartReq(func(r *Request) { r.RunAs = "" }), false,
			[]string{"web-restart:refused:run_as=default"}, `run_as "default" not allowed`},
		{"restart above max timeout", restartReq(func(r *Request) { r.Timeout = 2 * time.Minute }), false,
			[]string{"web-restart:refused:timeout=2m0s>max=1m0s"}, "timeout 2m0s above max 1m0s"},
		{"restart at max timeout", restartReq(func(r *Request) { r.Timeout = time.Minute }), true, []string{"web-restart:allow:" + restart}, ""},
		{"restart without timeout under a max", restartReq(func(r *Request) { r.Timeout = 0 }), false,
			[]string{"web-restart:refused:timeout=0s>max=1m0s"}, "timeout"},
		{"every failed constraint is reported", restartReq(func(r *Request) { r.Host = "db-1"; r.RunAs = "root" }), false,
			[]string{"web-restart:refused:host=db-1", "web-restart:refused:run_as=root"}, `host "db-1" not allowed by rule "web-restart"; run_as "root"`},
		{"restart with a smuggled argument", restartReq(func(r *Request) { r.Args = []string{"restart", "example@0042.service;reboot"} }), false,
			[]string{}, "no policy rule allows"},
		{"restart of another unit", restartReq(func(r *Request) { r.Args = []string{"restart", "sshd.service"} }), false,
			[]string{}, "no policy rule allows"},
		{"host glob ? matches one character", Request{Principal: deployer, Host: "web-3", Command: "ls"}, true, []string{"web-ls:allow:^ls( |$)"}, ""},
		{"host glob ? does not match two", Request{Principal: deployer, Host: "web-12", Command: "ls"}, false,
			[]string{"web-ls:refused:host=web-12"}, `host "web-12" not allowed`},

		// Dry-run-only rule.
		{"auditor dry run", Request{Principal: auditor, Host: "db-1", Command: "rm", Args: []string{"/etc/passwd"}, DryRun: true}, true,
			[]string{"auditor:allow:.*"}, ""},
		{"auditor real run", Request{Principal: auditor, Host: "db-1", Command: "ls", DryRun: false}, false,
			[]string{"auditor:refused:dry_run_only"}, `rule "auditor" allows dry runs only`},

		// Default deny.
		{"stranger: only the everyone rule applies", Request{Principal: stranger, Host: "db-1", Command: "ls"}, false, []string{}, "no policy rule allows"},
		{"unnamed principal", Request{Principal: auth.Principal{Roles: []string{"admin"}}, Host: "db-1", Command: "ls"}, false, []string{}, "no policy rule applies"},
		{"role name is not a principal name", Request{Principal: auth.Principal{Name: "admin"}, Host: "db-1", Command: "ls"}, false, []string{}, "no policy rule allows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := e.Decide(tt.req)
			want := Deny
			if tt.allow {
				want = Allow
			}
			if d.Decision != want {
				t.Fatalf("decision = %s (%v, err %v), want %s", d.Decision, d.Matched, err, want)
			}
			if !reflect.DeepEqual(d.Matched, tt.matched) {
				t.Errorf("matched = %q, want %q", d.Matched, tt.matched)
			}
			if tt.allow {
				if err != nil {
					t.Fatalf("allowed with error %v", err)
				}
				return
			}
			var oe *order.Error
			if !errors.As(err, &oe) || oe.Code != order.CodeForbidden {
				t.Fatalf("err = %v, want *order.Error %s", err, order.CodeForbidden)
			}
			if !strings.Contains(oe.Message, tt.msg) {
				t.Errorf("message %q does not contain %q", oe.Message, tt.msg)
			}
			if got, ok := oe.Details["policy"].(order.Decision); !ok || !reflect.DeepEqual(got, d) {
				t.Errorf("details[policy] = %#v, want %#v", oe.Details["policy"], d)
			}
		})
	}
}

func TestNoRulesDeniesEverything(t *testing.T) {
	e, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.Decide(Request{Principal: auth.Principal{Name: "admin", Roles: []string{"admin"}}, Host: "h", Command: "true"})
	if d.Decision != Deny || order.ErrorCode(err) != order.CodeForbidden {
		t.Fatalf("decision %+v, err %v; want deny", d, err)
	}
	if d.Matched == nil {
		t.Fatal("Matched is nil; want an empty list so JSON shows []")
	}
}

func TestNewRejectsBadRules(t *testing.T) {
	ok := config.Rule{Name: "ok", Principals: []string{"*"}, Hosts: []string{"*"}, Allow: []string{"^ls$"}}
	tests := []struct {
		name  string
		rules []config.Rule
		want  string
	}{
		{"bad allow regex", []config.Rule{ok, {Name: "r2", Allow: []string{"("}}}, `policy rule "r2": allow: bad regex "("`},
		{"bad deny regex", []config.Rule{{Name: "r1", Deny: []string{"[a-"}}}, `policy rule "r1": deny: bad regex`},
		{"empty regex", []config.Rule{{Name: "r1", Allow: []string{""}}}, `policy rule "r1": allow: empty regex`},
		{"bad host glob", []config.Rule{{Name: "web", Hosts: []string{"web-["}}}, `policy rule "web": hosts: bad glob "web-["`},
		{"empty host glob", []config.Rule{{Name: "web", Hosts: []string{""}}}, `policy rule "web": hosts: bad glob`},
		{"missing name", []config.Rule{ok, {Allow: []string{"x"}}}, "policy rule #2: name is required"},
		{"duplicate name", []config.Rule{ok, ok}, `policy rule "ok": duplicate name`},
		{"negative max timeout", []config.Rule{{Name: "t", MaxTimeout: -time.Second}}, `policy rule "t": max_timeout`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.rules)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New err = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestRulesAreCopied checks that editing the config after New cannot change
// a running Engine (a reload must build a new one).
func TestRulesAreCopied(t *testing.T) {
	rules := []config.Rule{{Name: "r", Principals: []string{"alice"}, Hosts: []string{"*"}, Allow: []string{"^ls$"}}}
	e, err := New(rules)
	if err != nil {
		t.Fatal(err)
	}
	rules[0].Principals[0] = "mallory"
	rules[0].Hosts[0] = "none"
	if d, _ := e.Decide(Request{Principal: auth.Principal{Name: "alice"}, Host: "h", Command: "ls"}); d.Decision != Allow {
		t.Fatalf("decision %+v after editing the config slice; want allow", d)
	}
}

// TestDefaultTimeoutClampedAndRunAsStar: a rule's max_timeout below the
// default clamps an order that named no timeout (and says so in the
// Decision) instead of refusing it; an explicit timeout above the max is
// still refused. run_as ["*"] covers orders that name no user. A rule
// naming "alice" is the static token's, never a JWT's "jwt:alice".
func TestDefaultTimeoutClampedAndRunAsStar(t *testing.T) {
	e, err := New([]config.Rule{
		{Name: "short", Principals: []string{"alice"}, Hosts: []string{"*"}, Allow: []string{"^ls$"}, MaxTimeout: 10 * time.Second},
		{Name: "anyone", Principals: []string{"bob"}, Hosts: []string{"*"}, Allow: []string{"^id$"}, RunAs: []string{"*"}},
		{Name: "sso", Principals: []string{"jwt:carol"}, Hosts: []string{"*"}, Allow: []string{"^ls$"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	alice := auth.Principal{Name: "alice", Kind: auth.KindToken}
	bob := auth.Principal{Name: "bob", Kind: auth.KindToken}
	for _, tt := range []struct {
		name        string
		req         Request
		allow       bool
		wantTimeout time.Duration // Decision.Timeout
	}{
		{"default timeout clamped", Request{Principal: alice, Host: "h", Command: "ls", Timeout: time.Minute, TimeoutDefaulted: true}, true, 10 * time.Second},
		{"default under the max kept", Request{Principal: alice, Host: "h", Command: "ls", Timeout: 5 * time.Second, TimeoutDefaulted: true}, true, 0},
		{"explicit timeout above the max refused", Request{Principal: alice, Host: "h", Command: "ls", Timeout: time.Minute}, false, 0},
		{"explicit timeout at the max", Request{Principal: alice, Host: "h", Command: "ls", Timeout: 10 * time.Second}, true, 0},
		{"run_as * covers the default user", Request{Principal: bob, Host: "h", Command: "id", Timeout: time.Minute}, true, 0},
		{"run_as * covers a named user", Request{Principal: bob, Host: "h", Command: "id", RunAs: "nobody", Timeout: time.Minute}, true, 0},
		{"JWT alice is not token alice", Request{Principal: auth.Principal{Name: "jwt:alice", Kind: auth.KindJWT}, Host: "h", Command: "ls", Timeout: time.Second}, false, 0},
		{"rule naming a JWT principal", Request{Principal: auth.Principal{Name: "jwt:carol", Kind: auth.KindJWT}, Host: "h", Command: "ls", Timeout: time.Second}, true, 0},
		{"token carol is not JWT carol", Request{Principal: auth.Principal{Name: "carol", Kind: auth.KindToken}, Host: "h", Command: "ls", Timeout: time.Second}, false, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, err := e.Decide(tt.req)
			if (d.Decision == Allow) != tt.allow || (err == nil) != tt.allow {
				t.Fatalf("decision %+v, err %v; want allow=%v", d, err, tt.allow)
			}
			if d.Timeout != tt.wantTimeout {
				t.Fatalf("Decision.Timeout = %s, want %s", d.Timeout, tt.wantTimeout)
			}
		})
	}
}

// TestDenyResolved: the deny rules an allowed decision carries, applied by
// the worker to the path the command resolved to. "halt" allowed by the
// API as a bare name is denied once it resolves to a path the admin rule's
// deny names in any spelling; a regex that does not compile refuses.
func TestDenyResolved(t *testing.T) {
	e, err := New(testRules())
	if err != nil {
		t.Fatal(err)
	}
	admin := auth.Principal{Name: "root-admin", Roles: []string{"admin"}}
	d, err := e.Decide(Request{Principal: admin, Host: "web-1", Command: "stop-all", Args: []string{"now"}, Timeout: time.Second})
	if err != nil || d.Decision != Allow {
		t.Fatalf("stop-all: %+v %v", d, err)
	}
	want := []order.DenyRule{{Rule: "admin", Regex: noPower}, {Rule: "admin", Regex: noInit}, {Rule: "everyone-no-rm", Regex: noRmRf}}
	if !reflect.DeepEqual(d.Deny, want) {
		t.Fatalf("recorded deny rules %+v, want %+v", d.Deny, want)
	}
	for _, c := range []struct {
		path string
		args []string
		deny string // the rule named, "" when allowed
	}{
		{"/opt/tools/stop-all", []string{"now"}, ""},
		{"/usr/sbin/halt", []string{"now"}, `"admin"`},                    // the basename
		{"/usr/local/bin/rm", []string{"x\n", "-rf"}, `"everyone-no-rm"`}, // dot-all
	} {
		err := DenyResolved(d, "stop-all", c.path, c.args)
		switch {
		case c.deny == "" && err != nil:
			t.Errorf("%s: %v", c.path, err)
		case c.deny != "" && (order.ErrorCode(err) != order.CodeForbidden || !strings.Contains(err.Error(), "rule "+c.deny+" (it resolves to "+c.path+")")):
			t.Errorf("%s: %v, want denied by %s", c.path, err, c.deny)
		}
	}
	bad := order.Decision{Decision: Allow, Deny: []order.DenyRule{{Rule: "x", Regex: "(unclosed"}}}
	if err := DenyResolved(bad, "ls", "/usr/bin/ls", nil); order.ErrorCode(err) != order.CodeForbidden {
		t.Errorf("a regex that does not compile: %v, want a refusal", err)
	}
	if err := DenyResolved(order.Decision{Decision: Allow}, "ls", "/usr/bin/ls", nil); err != nil {
		t.Errorf("no deny rules: %v", err)
	}
}

// TestDecideAllocations: an allowed order's decision, with and without
// arguments. The allow lines are the deny lines' first ones; built a
// second time they took 1 allocation more, 3 with arguments (the line's
// join): 5 and 9. A line joined as command + " " + strings.Join(args)
// took 2 allocations, one now.
func TestDecideAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("-race: sync.Pool drops a quarter of regexp's matchers, an allocation a decision does not make otherwise")
	}
	e, err := New([]config.Rule{
		{Name: "ops", Roles: []string{"ops"}, Hosts: []string{"*"}, Allow: []string{".*"}, Deny: []string{noPower}},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := auth.Principal{Name: "alice", Roles: []string{"ops"}}
	for _, c := range []struct {
		req Request
		max float64
	}{
		{Request{Principal: p, Host: "h", Command: "true", Timeout: time.Minute}, 4},
		{Request{Principal: p, Host: "h", Command: "ls", Args: []string{"-l", "/tmp"}, Timeout: time.Minute}, 5},
	} {
		n := testing.AllocsPerRun(200, func() {
			if d, err := e.Decide(c.req); err != nil || d.Decision != Allow {
				t.Fatalf("%+v: %+v, %v", c.req, d, err)
			}
		})
		if n > c.max {
			t.Errorf("%s %v: %.0f allocations to decide, want at most %.0f", c.req.Command, c.req.Args, n, c.max)
		}
	}
}

// TestAdminRefusedForWantOfARuleIsToldWhy: serve's admin token may run
// anything while the config has no policy rule (the built-in rule); the
// first rule of one's own (compat.md's httpexec or stage0 rule) ends that,
// and the admin's refusal must say so rather than only "no rule allows".
func TestAdminRefusedForWantOfARuleIsToldWhy(t *testing.T) {
	admin := auth.Principal{Name: "admin", Roles: []string{"admin"}, Kind: auth.KindToken}
	other := auth.Principal{Name: "ops", Roles: []string{"ops"}, Kind: auth.KindToken}
	const hint = "built-in rule that lets the admin role run anything applies only while the config has no policy rule"
	for _, tc := range []struct {
		name  string
		rules []config.Rule
		who   auth.Principal
		want  string // "" = no hint
	}{
		{"no rule applies to admin", []config.Rule{{Name: "httpexec", Principals: []string{"httpexec-client"}, Hosts: []string{"*"}, Allow: []string{`.*`}}},
			admin, "no policy rule applies to principal \"admin\""},
		{"a rule applies, none allows", []config.Rule{{Name: "stage0", Roles: []string{"developer", "admin"}, Hosts: []string{"*"}, Allow: []string{`^runbook:`}}},
			admin, "no policy rule allows command \"uname\""},
		{"not an admin", []config.Rule{{Name: "stage0", Roles: []string{"ops"}, Hosts: []string{"*"}, Allow: []string{`^runbook:`}}},
			other, ""},
		{"the built-in rule itself refuses nothing of admin's", []config.Rule{{Name: BuiltinAdmin, Roles: []string{"admin"}, Hosts: []string{"web-*"}, Allow: []string{`^ls$`}}},
			admin, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := New(tc.rules)
			if err != nil {
				t.Fatal(err)
			}
			_, err = e.Decide(Request{Principal: tc.who, Host: "db-1", Command: "uname"})
			if err == nil {
				t.Fatal("allowed, want a refusal")
			}
			if got := strings.Contains(err.Error(), hint); got != (tc.want != "") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("refusal %q: want it to contain %q and the hint %v", err, tc.want, tc.want != "")
			}
		})
	}
}
