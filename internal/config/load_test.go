package config

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// writeFile writes content to name in a fresh temp dir and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadPrecedence(t *testing.T) {
	file := writeFile(t, "orderly.yaml", `
listen: "127.0.0.1:9000"
nats:
  url: nats://file:4222
worker:
  kill_grace: 7s
  command_path: [/file/bin]
log:
  level: debug
`)
	environ := []string{
		"ORDERLY_NATS__URL=nats://env:4222",
		"ORDERLY_WORKER__KILL_GRACE=8s",
		"ORDERLY_WORKER__COMMAND_PATH=/env/bin",
		"ORDERLY_LOG__LEVEL=warn",
	}
	overrides := map[string]any{
		"worker.kill_grace": 9 * time.Second,
		"log.level":         "error",
	}
	cfg, _, err := Load(file, environ, overrides)
	if err != nil {
		t.Fatal(err)
	}
	def := Default()
	tests := []struct {
		key       string
		got, want any
	}{
		{"data_dir (default)", cfg.DataDir, def.DataDir},
		{"listen (file > default)", cfg.Listen, "127.0.0.1:9000"},
		{"nats.url (env > file)", cfg.NATS.URL, "nats://env:4222"},
		{"worker.command_path (env > file)", cfg.Worker.CommandPath, []string{"/env/bin"}},
		{"worker.kill_grace (flag > env > file)", cfg.Worker.KillGrace, 9 * time.Second},
		{"log.level (flag > env > file)", cfg.Log.Level, "error"},
		{"log.format (default)", cfg.Log.Format, def.Log.Format},
		{"nats.ack_wait (default in a section the file touched)", cfg.NATS.AckWait, def.NATS.AckWait},
		{"worker.env_deny (default in a section the file touched)", cfg.Worker.EnvDeny, def.Worker.EnvDeny},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s = %v, want %v", tt.key, tt.got, tt.want)
		}
	}
}

func TestLoadNoFileIsDefault(t *testing.T) {
	cfg, l, err := Load("", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("Load with nothing set differs from Default: %v", Changed(cfg, Default()))
	}
	if l.Path != "" || l.SHA256 != "" {
		t.Errorf("Loaded = %+v, want no path and no hash", l)
	}
}

func TestLoadEmptyFileIsDefault(t *testing.T) {
	for _, name := range []string{"empty.yaml", "empty.toml"} {
		cfg, _, err := Load(writeFile(t, name, ""), nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(cfg, Default()) {
			t.Errorf("%s: differs from Default: %v", name, Changed(cfg, Default()))
		}
	}
}

const equivalentYAML = `
data_dir: /var/lib/orderly
listen: "0.0.0.0:8443"
host: web-3
retention: 90d
nats:
  url: nats://a:4222,nats://b:4222
  replicas: 3
  dedup_window: 5m
worker:
  command_path: [/usr/bin, /bin]
  allow: ['^ls( |$)']
  use_sudo: true
  forbidden_chars: ";&"
  max_output_bytes: 2048
limits:
  max_args: 10
  max_timeout: 1d12h
auth:
  tokens:
    - name: ops
      sha256: "0000000000000000000000000000000000000000000000000000000000000001"
      roles: [ops, readonly]
  jwt:
    algorithm: HS256
    secret: "0123456789abcdef0123456789abcdef"
acl:
  allow: [10.0.0.0/8]
policy:
  - name: ops
    roles: [ops]
    hosts: ["web-*"]
    allow: ['^systemctl (status|restart) ']
    deny: ['reboot']
    run_as: [nobody]
    max_timeout: 30s
  - name: dry
    principals: [alice]
    dry_run_only: true
`

const equivalentTOML = `
data_dir = "/var/lib/orderly"
listen = "0.0.0.0:8443"
host = "web-3"
retention = "90d"

[nats]
url = "nats://a:4222,nats://b:4222"
replicas = 3
dedup_window = "5m"

[worker]
command_path = ["/usr/bin", "/bin"]
allow = ['^ls( |$)']
use_sudo = true
forbidden_chars = ";&"
max_output_bytes = 2048

[limits]
max_args = 10
max_timeout = "1d12h"

[[auth.tokens]]
name = "ops"
sha256 = "0000000000000000000000000000000000000000000000000000000000000001"
roles = ["ops", "readonly"]

[auth.jwt]
algorithm = "HS256"
secret = "0123456789abcdef0123456789abcdef"

[acl]
allow = ["10.0.0.0/8"]

[[policy]]
name = "ops"
roles = ["ops"]
hosts = ["web-*"]
allow = ['^systemctl (status|restart) ']
deny = ['reboot']
run_as = ["nobody"]
max_timeout = "30s"

[[policy]]
name = "dry"
principals = ["alice"]
dry_run_only = true
`

func TestLoadYAMLAndTOMLAreEquivalent(t *testing.T) {
	y, _, err := Load(writeFile(t, "orderly.yaml", equivalentYAML), nil, nil)
	if err != nil {
		t.Fatalf("yaml: %v", err)
	}
	tm, _, err := Load(writeFile(t, "orderly.toml", equivalentTOML), nil, nil)
	if err != nil {
		t.Fatalf("toml: %v", err)
	}
	if !reflect.DeepEqual(y, tm) {
		t.Fatalf("YAML and TOML differ at %v", Changed(y, tm))
	}
	if err := y.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if y.Retention != 90*24*time.Hour || y.Limits.MaxTimeout != 36*time.Hour {
		t.Errorf("retention %s, max_timeout %s", y.Retention, y.Limits.MaxTimeout)
	}
	if len(y.Policy) != 2 || y.Policy[0].MaxTimeout != 30*time.Second || !y.Policy[1].DryRunOnly {
		t.Errorf("policy = %+v", y.Policy)
	}
	if y.Auth.JWT.Leeway != Default().Auth.JWT.Leeway {
		t.Errorf("jwt.leeway default lost when auth.jwt was set: %s", y.Auth.JWT.Leeway)
	}
}

func TestLoadYMLExtension(t *testing.T) {
	cfg, _, err := Load(writeFile(t, "orderly.YML", "listen: \"127.0.0.1:1\"\n"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:1" {
		t.Errorf("listen = %q", cfg.Listen)
	}
}

func TestLoadUnsupportedExtension(t *testing.T) {
	_, _, err := Load(writeFile(t, "orderly.json", "{}"), nil, nil)
	if err == nil || !strings.Contains(err.Error(), "unsupported extension") {
		t.Fatalf("err = %v, want unsupported extension", err)
	}
}

func TestLoadUnknownKeys(t *testing.T) {
	tests := []struct {
		name, file, content, key string
	}{
		{"top level yaml", "c.yaml", "listn: \":1\"\n", "listn"},
		{"nested yaml", "c.yaml", "nats:\n  urll: nats://x\n", "nats.urll"},
		{"nested null yaml", "c.yaml", "worker:\n  alow:\n", "worker.alow"},
		{"policy rule yaml", "c.yaml", "policy:\n  - name: a\n  - name: b\n    alow: ['.*']\n", "policy[1].alow"},
		{"token yaml", "c.yaml", "auth:\n  tokens:\n    - name: a\n      sha: x\n", "auth.tokens[0].sha"},
		{"dotted key yaml", "c.yaml", "nats.url: nats://x\n", "nats.url"},
		{"top level toml", "c.toml", "listn = \":1\"\n", "listn"},
		{"nested toml", "c.toml", "[auth.jwt]\nalgoritm = \"HS256\"\n", "auth.jwt.algoritm"},
		{"policy rule toml", "c.toml", "[[policy]]\nname = \"a\"\ndeny_regex = [\"x\"]\n", "policy[0].deny_regex"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Load(writeFile(t, tt.file, tt.content), nil, nil)
			if err == nil {
				t.Fatal("unknown key accepted")
			}
			if !strings.Contains(err.Error(), "unknown keys: "+tt.key) {
				t.Fatalf("err = %v, want it to name %s", err, tt.key)
			}
		})
	}
}

func TestLoadTypeErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name, content, key string
	}{
		{"duration without unit", "worker:\n  kill_grace: 5\n", "worker.kill_grace"},
		{"bad duration", "retention: 3 months\n", "retention"},
		{"string for int", "limits:\n  max_args: many\n", "limits.max_args"},
		{"fraction for int", "limits:\n  max_args: 2.7\n", "limits.max_args"},
		{"scalar for section", "nats: nats://x\n", "nats"},
		{"scalar for list of rules", "policy: allow-all\n", "policy"},
		{"forbidden_chars list entry too long", "worker:\n  forbidden_chars: [\";\", \"&&\"]\n", "worker.forbidden_chars[1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Load(writeFile(t, "c.yaml", tt.content), nil, nil)
			if err == nil || !strings.Contains(err.Error(), tt.key) {
				t.Fatalf("err = %v, want it to name %s", err, tt.key)
			}
		})
	}
}

// A value of the wrong kind is refused in plain words, naming the key and
// not repeating the value; a fraction is never cut to a whole number.
func TestLoadScalarKinds(t *testing.T) {
	tests := []struct {
		name, content, want string
	}{
		{"fraction for int", "limits:\n  max_args: 2.7\n", "limits.max_args: 2.7 is not a whole number"},
		{"fraction for int64", "http:\n  max_body_bytes: 200.9\n", "http.max_body_bytes: 200.9 is not a whole number"},
		{"fraction for int, TOML", "[nats]\nreplicas = 1.7\n", "nats.replicas: 1.7 is not a whole number"},
		{"fraction for *int64", "actions:\n  definitions:\n    - name: a\n      command: [echo]\n      params:\n        - {name: n, type: int, min: 1.5}\n",
			"actions.definitions[0].params[0].min: 1.5 is not a whole number"},
		{"text for int", "limits:\n  max_args: s3cret\n", "limits.max_args: must be a whole number, not text"},
		{"bool for int", "limits:\n  max_args: true\n", "limits.max_args: must be a whole number, not true or false"},
		// Past int64, YAML gives a uint64 or a float64, which decoding
		// wrapped into a negative number (max: 2^63 became -2^63).
		{"past int64 as uint64", "http:\n  max_body_bytes: 9223372036854775808\n",
			"http.max_body_bytes: 9223372036854775808 is out of range"},
		{"past int64 as float", "actions:\n  definitions:\n    - name: a\n      command: [echo]\n      params:\n        - {name: n, type: int, max: 99999999999999999999}\n",
			"actions.definitions[0].params[0].max: 1e+20 is out of range (-9223372036854775808 to 9223372036854775807)"},
		{"below int64", "limits:\n  max_args: -9999999999999999999\n", "limits.max_args: -1e+19 is out of range (-9223372036854775808 to 9223372036854775807)"},
		// A list written as one value, or as a table, or a section written
		// as a list, was refused in Go's words ("source data must be an
		// array or slice, got string"): Vigrid's command_path is a
		// colon-separated string.
		{"text for a list", "acl:\n  allow: \"10.0.0.0/8\"\n",
			"acl.allow: must be a list, [a, b] or one \"- item\" line each, not a single value"},
		{"one table for a list of tables", "policy:\n  name: x\n  allow: ['.*']\n",
			"policy: must be a list, one \"- \" entry each, not a table of keys"},
		{"a list for a section", "worker:\n  - host: a\n", "worker: must be a table of keys (key: value lines), not a list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := "c.yaml"
			if strings.Contains(tt.name, "TOML") {
				name = "c.toml"
			}
			_, _, err := Load(writeFile(t, name, tt.content), nil, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			if _, msg, _ := strings.Cut(err.Error(), ".yaml: "); strings.Contains(msg, "s3cret") || strings.Contains(msg, "int") {
				t.Errorf("err = %v: repeats the value or speaks Go", err)
			}
		})
	}
	// A whole number written as a float is still a whole number.
	cfg, _, err := Load(writeFile(t, "c.yaml", "limits:\n  max_args: 12.0\n"), nil, nil)
	if err != nil || cfg.Limits.MaxArgs != 12 {
		t.Errorf("max_args: 12.0 gave %d, %v; want 12", cfg.Limits.MaxArgs, err)
	}
}

// TestLoadCommandPathAsOneValueNamesIt: Vigrid's command_path, one
// colon-separated string, is refused naming the value and the list it
// stands for (a directory is no secret).
func TestLoadCommandPathAsOneValueNamesIt(t *testing.T) {
	for in, want := range map[string]string{
		`"/usr/bin:/bin"`:     `worker.command_path: "/usr/bin:/bin" is a single value, not a list: write [/usr/bin, /bin], one directory an entry`,
		`/usr/local/bin`:      `worker.command_path: "/usr/local/bin" is a single value, not a list: write [/usr/local/bin], one directory an entry`,
		`"/opt/x::/usr/bin:"`: `worker.command_path: "/opt/x::/usr/bin:" is a single value, not a list: write [/opt/x, /usr/bin], one directory an entry`,
	} {
		_, _, err := Load(writeFile(t, "c.yaml", "worker:\n  command_path: "+in+"\n"), nil, nil)
		if err == nil || !strings.HasSuffix(err.Error(), ".yaml: "+want) {
			t.Errorf("command_path: %s: %v, want it to end with %q", in, err, want)
		}
	}
}

func TestLoadZeroDurationWithoutUnit(t *testing.T) {
	cfg, _, err := Load(writeFile(t, "c.yaml", "http:\n  write_timeout: 0\n"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.WriteTimeout != 0 {
		t.Errorf("write_timeout = %s", cfg.HTTP.WriteTimeout)
	}
}

func TestLoadNinetyDays(t *testing.T) {
	for _, src := range []struct{ name, content string }{
		{"c.yaml", "retention: 90d\n"},
		{"c.toml", "retention = \"90d\"\n"},
	} {
		cfg, _, err := Load(writeFile(t, src.name, src.content), []string{"ORDERLY_NATS__DEDUP_WINDOW=1d"}, map[string]any{"limits.max_timeout": "2d"})
		if err != nil {
			t.Fatalf("%s: %v", src.name, err)
		}
		if cfg.Retention != 90*24*time.Hour {
			t.Errorf("%s: retention = %s, want 2160h", src.name, cfg.Retention)
		}
		if cfg.NATS.DedupWindow != 24*time.Hour || cfg.Limits.MaxTimeout != 48*time.Hour {
			t.Errorf("%s: env 1d = %s, flag 2d = %s", src.name, cfg.NATS.DedupWindow, cfg.Limits.MaxTimeout)
		}
	}
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"90d", 90 * 24 * time.Hour, true},
		{"1d12h", 36 * time.Hour, true},
		{"0d", 0, true},
		{"30s", 30 * time.Second, true},
		{"1h30m", 90 * time.Minute, true},
		{" 2m ", 2 * time.Minute, true},
		{"-1d", -24 * time.Hour, true},
		{"d", 0, false},
		{"1.5d", 0, false},
		{"90days", 0, false},
		{"1d-1h", 0, false},
		{"90", 0, false},
		{"", 0, false},
		{"999999999d", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseDuration(%q) = %s, %v; want %s, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestLoadEnvValues(t *testing.T) {
	environ := []string{
		"ORDERLY_WORKER__COMMAND_PATH=/opt/bin, /usr/bin,,",
		"ORDERLY_ACL__ALLOW=10.0.0.0/8,192.168.0.0/16",
		"ORDERLY_ACL__DENY=",
		"ORDERLY_WORKER__USE_SUDO=true",
		"ORDERLY_LIMITS__MAX_ARGS=3",
		"ORDERLY_HTTP__MAX_BODY_BYTES=4096",
		"ORDERLY_AUTH__JWT__SECRET=s3cret",
		"ORDERLY_DATA_DIR=/srv/orderly",
		"ORDERLY_LISTEN=[::1]:8080",
		"ORDERLY_URL=http://client.example:8080", // client variable, not a key
		"ORDERLY_TOKEN=abc",                      // client variable, not a key
		"NATS__URL=nats://not-ours",
		"malformed",
	}
	cfg, _, err := Load(writeFile(t, "c.yaml", "acl:\n  deny: [1.2.3.4/32]\n"), environ, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key       string
		got, want any
	}{
		{"worker.command_path", cfg.Worker.CommandPath, []string{"/opt/bin", "/usr/bin"}},
		{"acl.allow", cfg.ACL.Allow, []string{"10.0.0.0/8", "192.168.0.0/16"}},
		{"acl.deny (empty env clears the file's list)", cfg.ACL.Deny, []string{}},
		{"worker.use_sudo", cfg.Worker.UseSudo, true},
		{"limits.max_args", cfg.Limits.MaxArgs, 3},
		{"http.max_body_bytes", cfg.HTTP.MaxBodyBytes, int64(4096)},
		{"auth.jwt.secret", string(cfg.Auth.JWT.Secret), "s3cret"},
		{"data_dir", cfg.DataDir, "/srv/orderly"},
		{"listen", cfg.Listen, "[::1]:8080"},
		{"nats.url", cfg.NATS.URL, ""},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s = %#v, want %#v", tt.key, tt.got, tt.want)
		}
	}
}

func TestLoadEnvErrors(t *testing.T) {
	tests := []struct {
		env, want string
	}{
		{"ORDERLY_NATS__URLL=nats://x", `ORDERLY_NATS__URLL: unknown key "nats.urll"`},
		{"ORDERLY_WORKER__USE_SUDO=maybe", "ORDERLY_WORKER__USE_SUDO: not a boolean"},
		{"ORDERLY_LIMITS__MAX_ARGS=ten", "ORDERLY_LIMITS__MAX_ARGS: not an integer"},
		{"ORDERLY_WORKER__KILL_GRACE=5", "ORDERLY_WORKER__KILL_GRACE: invalid duration"},
		{"ORDERLY_POLICY=x", "ORDERLY_POLICY: a list of tables"},
		{"ORDERLY_COMPAT__VIGRID__USERS=alice", "ORDERLY_COMPAT__VIGRID__USERS: a map can only be set in the config file"},
		{"ORDERLY_NATS=x", "ORDERLY_NATS: is a section"},
		{"ORDERLY_NATS____URL=x", "ORDERLY_NATS____URL: malformed"},
	}
	for _, tt := range tests {
		_, _, err := Load("", []string{tt.env}, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.env, err, tt.want)
		}
	}
}

func TestLoadEnvErrorDoesNotEchoValue(t *testing.T) {
	_, _, err := Load("", []string{"ORDERLY_LIMITS__MAX_ARGS=hunter2"}, nil)
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("err = %v", err)
	}
}

func TestLoadOverrides(t *testing.T) {
	cfg, l, err := Load("", nil, map[string]any{
		"listen":              "127.0.0.1:1",
		"nats.url":            "nats://flag",
		"worker.use_sudo":     "true",
		"worker.allow":        []string{"^a", "^b,c"},
		"limits.max_args":     5,
		"nats.replicas":       nil, // unset flag
		"auth.jwt.leeway":     time.Minute,
		"worker.command_path": "/a,/b",
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:1" || cfg.NATS.URL != "nats://flag" || !cfg.Worker.UseSudo ||
		!reflect.DeepEqual(cfg.Worker.Allow, []string{"^a", "^b,c"}) || cfg.Limits.MaxArgs != 5 ||
		cfg.NATS.Replicas != 1 || cfg.Auth.JWT.Leeway != time.Minute ||
		!reflect.DeepEqual(cfg.Worker.CommandPath, []string{"/a", "/b"}) {
		t.Errorf("overrides not applied: %+v", cfg)
	}
	if len(l.Overrides) != 8 {
		t.Errorf("Loaded.Overrides = %v", l.Overrides)
	}

	for key, want := range map[string]string{
		"nats.urll": `unknown key "nats.urll"`,
		"nats":      "is a section",
	} {
		if _, _, err := Load("", nil, map[string]any{key: 1}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("override %s: err = %v, want %q", key, err, want)
		}
	}
}

func TestLoadedRecordsFileHashAndOverrides(t *testing.T) {
	content := "listen: \"127.0.0.1:1\"\n"
	p := writeFile(t, "c.yaml", content)
	overrides := map[string]any{"log.level": "debug"}
	_, l, err := Load(p, nil, overrides)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(content))
	if l.Path != p || l.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("Loaded = %+v", l)
	}
	overrides["log.level"] = "changed after Load"
	if l.Overrides["log.level"] != "debug" {
		t.Errorf("Loaded.Overrides aliases the caller's map: %v", l.Overrides)
	}
}

func TestForbiddenCharsListEqualsString(t *testing.T) {
	list, _, err := Load(writeFile(t, "a.yaml", "worker:\n  forbidden_chars: [\";\", \"\\\\\", \"'\"]\n"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	str, _, err := Load(writeFile(t, "b.toml", "[worker]\nforbidden_chars = ''';\\''''\n"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if list.Worker.ForbiddenChars != `;\'` || str.Worker.ForbiddenChars != list.Worker.ForbiddenChars {
		t.Errorf("list form %q, string form %q, want %q", list.Worker.ForbiddenChars, str.Worker.ForbiddenChars, `;\'`)
	}
}
