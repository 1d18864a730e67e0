package config

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const examplePath = "../../deploy/orderly.example.yaml"

func TestExampleConfigLoadsAndValidates(t *testing.T) {
	cfg, l, err := Load(examplePath, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if l.SHA256 == "" {
		t.Error("no hash recorded for the example file")
	}

	// Vigrid's 12 forbidden characters, in the order of its documentation
	// (docs/compat.md; the set `orderly import vigrid` writes).
	if want := "\"';\\|&(){}$`"; cfg.Worker.ForbiddenChars != want {
		t.Errorf("worker.forbidden_chars = %q, want %q", cfg.Worker.ForbiddenChars, want)
	}
	if n := len([]rune(cfg.Worker.ForbiddenChars)); n != 12 {
		t.Errorf("%d forbidden characters, want 12", n)
	}

	names := map[string]bool{}
	for _, tok := range cfg.Auth.Tokens {
		names[tok.Name] = true
	}
	if !names["monitor"] || !names["operator"] {
		t.Errorf("tokens = %v, want monitor and operator", cfg.Auth.Tokens)
	}
	// docs/deploy.md installs this file for orderly-serve.service, and
	// serve refuses to start with a config token named as its own admin
	// token.
	if names["admin"] {
		t.Error(`a token is named "admin": orderly serve would refuse to start with this file`)
	}
	// orderly-serve.service runs as the user orderly, which cannot switch
	// users: a default user would stop serve (hostpolicy's
	// checkDefaultUser).
	if cfg.Worker.DefaultUser != "" || cfg.Worker.UseSudo {
		t.Errorf("worker.default_user %q, use_sudo %v: orderly-serve.service's worker is not root and cannot switch users", cfg.Worker.DefaultUser, cfg.Worker.UseSudo)
	}
}

// TestSystemdExamplesLoadAndValidate loads the configs that
// docs/deploy.md installs as /etc/orderly/api.yaml and worker.yaml. Each
// must validate and set what `orderly api` and `orderly worker` refuse to
// start without: a database, a NATS URL and the process's seed.
func TestSystemdExamplesLoadAndValidate(t *testing.T) {
	for _, name := range []string{"api", "worker"} {
		t.Run(name, func(t *testing.T) {
			cfg, _, err := Load("../../deploy/systemd/"+name+".example.yaml", nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			if cfg.DatabaseURL == "" || cfg.NATS.URL == "" || cfg.NATS.Nkey == "" {
				t.Errorf("database_url %q, nats.url %q, nats.nkey %q: each must be set", cfg.DatabaseURL, cfg.NATS.URL, cfg.NATS.Nkey)
			}
		})
	}
}

// rule returns the policy rule that names principal, failing the test if
// there is not exactly one.
func rule(t *testing.T, cfg Config, principal string) Rule {
	t.Helper()
	var found []Rule
	for _, r := range cfg.Policy {
		if slices.Contains(r.Principals, principal) {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d rules for principal %s, want 1", len(found), principal)
	}
	return found[0]
}

// matchesAny reports whether any of the regexes matches line.
func matchesAny(t *testing.T, res []string, line string) bool {
	t.Helper()
	for _, s := range res {
		if regexp.MustCompile(s).MatchString(line) {
			return true
		}
	}
	return false
}

func TestExampleConfigRules(t *testing.T) {
	cfg, _, err := Load(examplePath, nil, nil)
	if err != nil {
		t.Fatal(err)
	}

	monitor := rule(t, cfg, "monitor")
	if want := []string{`^(uptime|df|free|ps|who|w|systemctl status)( |$)`}; !reflect.DeepEqual(monitor.Allow, want) {
		t.Errorf("monitor allow = %q, want %q", monitor.Allow, want)
	}
	for line, allowed := range map[string]bool{
		"uptime":                  true,
		"df -h":                   true,
		"w":                       true,
		"systemctl status nginx":  true,
		"systemctl restart nginx": false,
		"wall hello":              false,
		"rm -rf /":                false,
		"psql -c drop":            false,
	} {
		if got := matchesAny(t, monitor.Allow, line) && !matchesAny(t, monitor.Deny, line); got != allowed {
			t.Errorf("monitor %q: allowed=%v, want %v", line, got, allowed)
		}
	}

	admin := rule(t, cfg, "operator")
	if want := []string{`shutdown|reboot|poweroff|halt|init [06]`}; !reflect.DeepEqual(admin.Deny, want) {
		t.Errorf("admin deny = %q, want %q", admin.Deny, want)
	}
	for line, allowed := range map[string]bool{
		"systemctl restart nginx": true,
		"apt-get upgrade -y":      true,
		"init 3":                  true,
		"shutdown -h now":         false,
		"/sbin/reboot":            false,
		"systemctl poweroff":      false,
		"halt":                    false,
		"telinit 0":               false,
		"init 6":                  false,
	} {
		if got := matchesAny(t, admin.Allow, line) && !matchesAny(t, admin.Deny, line); got != allowed {
			t.Errorf("admin %q: allowed=%v, want %v", line, got, allowed)
		}
	}
}

// keys lists every key path of type t, with "[]" marking list elements.
func keys(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		key := prefix + f.Tag.Get("koanf")
		out = append(out, key)
		switch {
		case isSection(f.Type):
			out = append(out, keys(f.Type, key+".")...)
		case f.Type.Kind() == reflect.Slice && isSection(f.Type.Elem()):
			out = append(out, keys(f.Type.Elem(), key+"[].")...)
		}
	}
	return out
}

func TestDocsListEveryKey(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys(reflect.TypeFor[Config](), "") {
		if !strings.Contains(string(doc), "`"+k+"`") {
			t.Errorf("docs/config.md does not document `%s`", k)
		}
	}
}
