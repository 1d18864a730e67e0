package action

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/testenv"
)

// polkitSet has a systemd action of each param kind the rule must render.
func polkitSet(t *testing.T) *Set {
	t.Helper()
	s, err := New(config.Actions{Bus: "system", Definitions: []config.Action{
		{Name: "restart-example", Hosts: []string{"*"}, Roles: []string{"ops"},
			Params:  []config.ActionParam{{Name: "id", Pattern: "[0-9]{4}"}},
			Systemd: config.ActionSystemd{Verb: "restart", Unit: "example@{id}.service"}},
		{Name: "stop-worker", Hosts: []string{"*"}, Roles: []string{"ops"},
			Params:  []config.ActionParam{{Name: "queue", Type: "enum", Values: []string{"mail", "a.b"}}},
			Systemd: config.ActionSystemd{Verb: "stop", Unit: "worker-{queue}.service"}},
		{Name: "echo", Hosts: []string{"*"}, Roles: []string{"ops"}, Command: []string{"/bin/echo"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// polkitCases are (action id, unit, verb) and whether the rule allows it.
var polkitCases = []struct {
	id, unit, verb string
	allow          bool
}{
	{"org.freedesktop.systemd1.manage-units", "example@0042.service", "restart", true},
	{"org.freedesktop.systemd1.manage-units", "example@9999.service", "restart", true},
	{"org.freedesktop.systemd1.manage-units", "example@0042.service", "stop", false},
	{"org.freedesktop.systemd1.manage-units", "example@0042.service", "start", false},
	{"org.freedesktop.systemd1.manage-units", "example@42.service", "restart", false},
	{"org.freedesktop.systemd1.manage-units", "example@00420.service", "restart", false},
	{"org.freedesktop.systemd1.manage-units", "example@0042.socket", "restart", false},
	{"org.freedesktop.systemd1.manage-units", "xexample@0042.service", "restart", false},
	{"org.freedesktop.systemd1.manage-units", "example@0042Xservice", "restart", false},
	{"org.freedesktop.systemd1.manage-units", "dbus.service", "restart", false},
	{"org.freedesktop.systemd1.manage-units", "worker-mail.service", "stop", true},
	{"org.freedesktop.systemd1.manage-units", "worker-a.b.service", "stop", true},
	{"org.freedesktop.systemd1.manage-units", "worker-aXb.service", "stop", false},
	{"org.freedesktop.systemd1.manage-units", "worker-mail.service", "restart", false},
	{"org.freedesktop.systemd1.manage-unit-files", "example@0042.service", "restart", false},
	{"org.freedesktop.systemd1.reload-daemon", "", "", false},
}

// TestPolkitGrantsLogic evaluates the rule's grants with its own table
// of cases (Go's RE2 reads the unit regexes as JavaScript does, by
// construction): the logic, wherever polkitd is not available.
func TestPolkitGrantsLogic(t *testing.T) {
	grants, err := polkitSet(t).Polkit(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(grants) != 2 {
		t.Fatalf("grants %+v: want the two systemd actions", grants)
	}
	for _, c := range polkitCases {
		got := false
		if c.id == "org.freedesktop.systemd1.manage-units" {
			for _, g := range grants {
				if regexp.MustCompile(g.UnitRegex).MatchString(c.unit) && slices.Contains(g.Verbs, c.verb) {
					got = true
				}
			}
		}
		if got != c.allow {
			t.Errorf("%s %s %s: allowed %v, want %v", c.id, c.verb, c.unit, got, c.allow)
		}
	}
	if _, err := polkitSet(t).Polkit([]string{"echo"}, ""); err == nil {
		t.Error("a command action got a polkit rule")
	}
	// With no --host the refusal named host "", which no host is.
	commands, err := New(config.Actions{Definitions: []config.Action{{Name: "echo", Hosts: []string{"*"}, Command: []string{"/bin/echo"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := commands.Polkit(nil, ""); err == nil || strings.Contains(err.Error(), "host") {
		t.Errorf("no systemd action: %v, want a refusal that names no host", err)
	}
	bad, err := New(config.Actions{Definitions: []config.Action{{Name: "x", Hosts: []string{"*"},
		Params:  []config.ActionParam{{Name: "id", Pattern: `(?i)[a-z]+`}},
		Systemd: config.ActionSystemd{Verb: "start", Unit: "x@{id}.service"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Polkit(nil, ""); err == nil {
		t.Error("an RE2-only pattern got a polkit rule")
	}
}

// TestPolkitPatterns: anchors at the ends of a pattern (redundant: a
// value matches whole) are left out of the rule, where they could never
// match inside the unit's regex; one elsewhere, and RE2-only syntax such
// as \x{…}, refuse the rule; --host leaves out what that host may not run.
func TestPolkitPatterns(t *testing.T) {
	set := func(pattern string, hosts ...string) *Set {
		s, err := New(config.Actions{Definitions: []config.Action{{Name: "x", Hosts: append([]string{"web-*"}, hosts...),
			Params:  []config.ActionParam{{Name: "id", Pattern: pattern}},
			Systemd: config.ActionSystemd{Verb: "restart", Unit: "example@{id}.service"}}}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, p := range []string{"^[0-9]{4}$", "^[0-9]{4}", "[0-9]{4}$", "[0-9]{4}"} {
		g, err := set(p).Polkit(nil, "")
		if err != nil || len(g) != 1 || g[0].UnitRegex != `^example@(?:[0-9]{4})\.service$` {
			t.Errorf("pattern %q: %+v %v", p, g, err)
			continue
		}
		if !regexp.MustCompile(g[0].UnitRegex).MatchString("example@0042.service") {
			t.Errorf("pattern %q: the rule does not grant example@0042.service", p)
		}
	}
	for _, p := range []string{`[0-9]{2}$[0-9]{2}`, `a|^b`, `\x{30}{4}`} {
		if _, err := set(p).Polkit(nil, ""); err == nil {
			t.Errorf("pattern %q got a rule", p)
		}
	}
	for _, p := range []string{`[\^$]+`, `[^/]+`, `x\$`} {
		if _, err := set(p).Polkit(nil, ""); err != nil {
			t.Errorf("pattern %q (no anchor) refused: %v", p, err)
		}
	}
	if g, err := set("[0-9]{4}").Polkit(nil, "db-1"); err == nil || len(g) != 0 {
		t.Errorf("a rule for db-1 grants an action of web-* hosts: %+v", g)
	}
	if g, err := set("[0-9]{4}").Polkit(nil, "web-3"); err != nil || len(g) != 1 {
		t.Errorf("a rule for web-3: %+v %v", g, err)
	}
	if _, err := set("[0-9]{4}").Polkit([]string{"x"}, "db-1"); err == nil {
		t.Error("the named action got a rule for a host it does not run on")
	}
}

// pkSetup runs polkitd on a private system bus in a private mount
// namespace (tmpfs over /run/dbus and both rules.d directories, so the
// machine's polkit and D-Bus are untouched), installs the rule file
// given as $1, starts a process as nobody (the subject), then runs the
// test binary ("$@" after the file) with its pid in PK_SUBJECT.
const pkSetup = `set -eu
rule="$1"; shift
mkdir -p /run/dbus /etc/polkit-1/rules.d /usr/share/polkit-1/rules.d
mount -t tmpfs tmpfs /run/dbus
mount -t tmpfs tmpfs /etc/polkit-1/rules.d
mount -t tmpfs tmpfs /usr/share/polkit-1/rules.d
cp "$rule" /etc/polkit-1/rules.d/50-orderly.rules
# Children of this shell (no --fork), so that it reaps them at the end.
dbus-daemon --system --nofork > /run/dbus/dbus.log 2>&1 &
DB=$!
for _ in $(seq 100); do [ -S /run/dbus/system_bus_socket ] && break; sleep 0.1; done
/usr/lib/polkit-1/polkitd --no-debug > /run/dbus/polkitd.log 2>&1 &
PK=$!
setpriv --reuid=nobody --regid=nogroup --clear-groups sleep 300 &
SUB=$!
cleanup() { kill "$SUB" "$PK" "$DB" 2>/dev/null || true; wait "$SUB" "$PK" "$DB" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 100); do
	busctl --system status org.freedesktop.PolicyKit1 >/dev/null 2>&1 && break
	sleep 0.1
done
PK_SUBJECT=$SUB "$@" || { cat /run/dbus/polkitd.log; exit 1; }
`

const pkInner = "ORDERLY_POLKIT_INNER"

// TestPolkitRuleWithPolkitd installs the generated rule in a real polkitd
// and asks it with pkcheck, as systemd asks it for a D-Bus caller, each
// case of the table for a process of the rule's user. It needs root,
// unshare, dbus-daemon, polkitd and pkcheck (scripts/ensure-dbus.sh);
// under CI=true their absence fails it.
func TestPolkitRuleWithPolkitd(t *testing.T) {
	if os.Getenv(pkInner) == "1" {
		polkitInside(t)
		return
	}
	testenv.NeedRootTools(t, "polkitd in a namespace", "scripts/ensure-dbus.sh",
		"unshare", "setpriv", "dbus-daemon", "busctl", "pkcheck", "/usr/lib/polkit-1/polkitd")
	grants, err := polkitSet(t).Polkit(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	rule := filepath.Join(t.TempDir(), "50-orderly.rules")
	if err := os.WriteFile(rule, []byte(PolkitRule("nobody", grants)), 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.RerunInMountNamespace(t, pkSetup, []string{rule}, "TestPolkitRuleWithPolkitd", pkInner)
}

func polkitInside(t *testing.T) {
	pid := os.Getenv("PK_SUBJECT")
	for _, c := range polkitCases {
		args := []string{"--action-id", c.id, "--process", pid}
		if c.unit != "" {
			args = append(args, "--detail", "unit", c.unit, "--detail", "verb", c.verb)
		}
		out, err := exec.CommandContext(t.Context(), "pkcheck", args...).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("pkcheck: %v", err)
		}
		// 0 authorized, 1 not authorized, 2 would need authentication,
		// 3 dismissed; anything else is pkcheck failing.
		if code > 3 {
			t.Fatalf("pkcheck %v: exit %d: %s", args, code, out)
		}
		if got := code == 0; got != c.allow {
			t.Errorf("%s %s %s: polkitd says allowed=%v (exit %d), want %v", c.id, c.verb, c.unit, got, code, c.allow)
		}
	}
}
