package config

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
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

// docRow is a row of a key table in docs/config.md: its key and the text of
// its type and default columns.
type docRow struct {
	line            int
	key, typ, deflt string
}

// docRows reads the key tables of docs/config.md: rows whose first cell is
// one backquoted key and that have a default column.
func docRows(t *testing.T) []docRow {
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	var rows []docRow
	for i, l := range strings.Split(string(doc), "\n") {
		cells := strings.Split(l, " | ")
		if !strings.HasPrefix(l, "| `") || len(cells) < 4 {
			continue
		}
		key := strings.TrimPrefix(cells[0], "| ")
		if strings.Count(key, "`") != 2 || !strings.HasSuffix(key, "`") {
			continue
		}
		rows = append(rows, docRow{line: i + 1, key: strings.Trim(key, "`"), typ: strings.TrimSpace(cells[1]), deflt: strings.TrimSpace(cells[2])})
	}
	return rows
}

// TestDocsKeysAndDefaults checks docs/config.md the other way round from
// TestDocsListEveryKey: every key its tables list is one the config knows,
// and the default they give is the one Default() has.
func TestDocsKeysAndDefaults(t *testing.T) {
	known := map[string]bool{}
	for _, k := range keys(reflect.TypeFor[Config](), "") {
		known[k] = true
	}
	def := reflect.ValueOf(Default())
	rows := docRows(t)
	if len(rows) < len(known)/2 {
		t.Fatalf("read only %d rows of docs/config.md's key tables", len(rows))
	}
	for _, r := range rows {
		if !known[r.key] {
			t.Errorf("docs/config.md:%d: `%s` is no config key", r.line, r.key)
			continue
		}
		v, ok := valueAt(def, r.key)
		if !ok || r.key == "host" {
			// Inside a list (a default there is the element's), or
			// worked out when unset (host: the short hostname).
			continue
		}
		if msg := compareDefault(v, r.deflt); msg != "" {
			t.Errorf("docs/config.md:%d: `%s` default %s: %s", r.line, r.key, r.deflt, msg)
		}
	}
}

// TestDocsKeyTypes checks the type column of docs/config.md's key tables
// against the Go type of each key, as the "Value syntax" table reads
// them: a duration is a time.Duration, a bool a bool, an int or bytes a
// whole number, a list a slice, a map a map, a section a struct, and any
// other word (string, path, user, URL, host:port, a regex, the allowed
// words) a string.
func TestDocsKeyTypes(t *testing.T) {
	rows := docRows(t)
	for _, r := range rows {
		typ, err := keyType(r.key)
		if err != nil {
			t.Errorf("docs/config.md:%d: %v", r.line, err)
			continue
		}
		var want string
		switch {
		case typ == reflect.TypeFor[time.Duration]():
			want = "duration"
		case typ.Kind() == reflect.Bool:
			want = "bool"
		case typ.Kind() == reflect.Int, typ.Kind() == reflect.Int64:
			want = "whole number"
		case typ.Kind() == reflect.Slice:
			want = "list"
		case typ.Kind() == reflect.Map:
			want = "map"
		case typ.Kind() == reflect.Struct:
			want = "section"
		case typ.Kind() == reflect.String:
			want = "string"
		default:
			t.Errorf("docs/config.md:%d: `%s` is a %s, which this test does not know", r.line, r.key, typ)
			continue
		}
		var got string
		switch d := r.typ; {
		case d == "duration":
			got = "duration"
		case d == "bool":
			got = "bool"
		case d == "int" || d == "bytes":
			got = "whole number"
		case strings.HasPrefix(d, "list"):
			got = "list"
		case strings.HasPrefix(d, "map"):
			got = "map"
		case d == "section":
			got = "section"
		default:
			got = "string"
		}
		// worker.forbidden_chars is a string that the file may also
		// give as a list of characters (TestForbiddenCharsListEqualsString).
		if got != want && !(r.key == "worker.forbidden_chars" && r.typ == "string or list") {
			t.Errorf("docs/config.md:%d: `%s` is said to be %q; the code's %s is a %s", r.line, r.key, r.typ, typ, want)
		}
	}
}

// keyType is the Go type of a key of docs/config.md's tables, "[]" and all
// (a pointer's element: an optional value).
func keyType(key string) (reflect.Type, error) {
	t := reflect.TypeFor[Config]()
	for _, p := range strings.Split(key, ".") {
		p, list := strings.CutSuffix(p, "[]")
		f, ok := field(t, p)
		if !ok {
			return nil, fmt.Errorf("`%s` is no config key", key)
		}
		t = f.Type
		if list {
			if t.Kind() != reflect.Slice {
				return nil, fmt.Errorf("`%s`: %s is no list", key, p)
			}
			t = t.Elem()
		}
		if t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
	}
	return t, nil
}

// valueAt returns the value of a key in cfg; false for a key inside a list.
func valueAt(cfg reflect.Value, key string) (reflect.Value, bool) {
	v := cfg
	for _, p := range strings.Split(key, ".") {
		if strings.HasSuffix(p, "[]") {
			return reflect.Value{}, false
		}
		f, ok := field(v.Type(), p)
		if !ok {
			return reflect.Value{}, false
		}
		v = v.FieldByIndex(f.Index)
	}
	return v, true
}

// backquoted matches a default column made only of backquoted values, with
// an optional note in parentheses after them: "`1`", "`a`, `b`", "`50331648` (48 MiB)".
var backquoted = regexp.MustCompile("^(`[^`]*`(?:, `[^`]*`)*)(?: \\(.*\\))?$")

// compareDefault says how the documented default d differs from v, or "".
func compareDefault(v reflect.Value, d string) string {
	var items []string
	switch {
	case d == "" || d == "*(empty)*" || d == "*(none)*":
		if !v.IsZero() && !(v.Kind() == reflect.Slice && v.Len() == 0) {
			return fmt.Sprintf("the code's default is %v", v.Interface())
		}
		return ""
	case backquoted.MatchString(d):
		for _, it := range strings.Split(backquoted.FindStringSubmatch(d)[1], ", ") {
			items = append(items, strings.Trim(it, "`"))
		}
	default:
		return "is neither a value nor empty"
	}
	if v.Kind() == reflect.Slice {
		if len(items) == 1 && items[0] == "[]" {
			items = nil
		}
		got := v.Interface().([]string)
		if !slices.Equal(got, items) && !(len(got) == 0 && len(items) == 0) {
			return fmt.Sprintf("the code's default is %q", got)
		}
		return ""
	}
	if len(items) != 1 {
		return "lists several values for one"
	}
	want := items[0]
	if want == `""` {
		want = ""
	}
	var got string
	switch {
	case v.Type() == reflect.TypeFor[time.Duration]():
		d, err := ParseDuration(want)
		if err != nil {
			return err.Error()
		}
		if time.Duration(v.Int()) != d {
			return fmt.Sprintf("the code's default is %s", time.Duration(v.Int()))
		}
		return ""
	case v.Kind() == reflect.String:
		got = v.String()
	default:
		got = fmt.Sprint(v.Interface())
	}
	if got != want {
		return fmt.Sprintf("the code's default is %q", got)
	}
	return ""
}
