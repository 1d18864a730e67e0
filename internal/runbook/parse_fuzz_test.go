package runbook

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode"
)

// FuzzParse gives Parse a runbook document and Sanitize a request's
// env_vars, both from the fuzzer. Parse never fails and says the same of
// the same text; a runbook it finds valid has a script, env names a run
// can be given, and inputs that stay inside its directory (also as the
// source resolves them); Sanitize accepts only valid names and leaves no
// control character but tab, newline and carriage return in a value.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		string(md(rotateLogs)),
		"# X\n# Environment Requirements\n```yaml\nA: b\n```\n# File System Requirements\n```yaml\nInput:\n  - ../etc/passwd\n```\n# Script\n```sh\necho\n```\n# History\n",
		"# X\r\n# Environment Requirements\r\n```yaml\n1A: x\n```\n# File System Requirements\n```yaml\nInput: [/etc, \"a\\u0000b\", ./x/../../y]\n```\n# Required Claims\n```yaml\nroles: [[1]]\n```\n# Script\n```\n```\n# History\n",
		"#X\n# Script\n```sh\n# Script\n```\n```sh\nsecond\n```\n",
		"# X\n# Environment Requirements\n```yaml\n&a [*a, *a]\n```\n",
		"# X\n# File System Requirements\n```yaml\nInput:\n  - !!binary aGk=\n  - {a: b}\n  - 1e400\n```\n",
		"", " \n\r", "# ", "```", "# X\n# History\n# History\n",
	} {
		f.Add("RotateLogs.md", []byte(s), `{"KEEP_DAYS":"7","LOG_TAG":"a\u0085b\u001b[31m"}`)
	}
	f.Add("x.md", []byte("# x"), `{"1A":1,"B":null,"C":true,"D":1e400,"E":{"a":1}}`)
	f.Add("x.md", []byte("# x"), `{"A=B":"1","":"2"}`)
	top := f.TempDir()
	dir := filepath.Join(top, "runbooks")
	for _, d := range []string{dir, filepath.Join(dir, "sub.md")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			f.Fatal(err)
		}
	}
	for _, p := range []string{filepath.Join(dir, "RotateLogs.md"), filepath.Join(top, "outside.md")} {
		if err := os.WriteFile(p, md(rotateLogs), 0o644); err != nil {
			f.Fatal(err)
		}
	}
	if err := os.Symlink("../outside.md", filepath.Join(dir, "link.md")); err != nil {
		f.Fatal(err)
	}
	src, err := NewSource(dir)
	if err != nil {
		f.Fatal(err)
	}
	f.Add("link.md", []byte("# x"), `{}`)
	f.Add("../outside.md", []byte("# x"), `{}`)
	f.Add("sub.md", []byte("# x"), `{}`)
	f.Fuzz(func(t *testing.T, file string, text []byte, vars string) {
		// The file a request names (stage0's /runbooks/<name>): only a
		// regular file inside the directory, never through a link out.
		if loaded, err := src.Load(file); err == nil && file != "RotateLogs.md" {
			t.Fatalf("%q loads (%q), only RotateLogs.md is in the directory", file, loaded.File)
		}
		rb := Parse(file, text)
		if again := Parse(file, text); !reflect.DeepEqual(rb, again) {
			t.Fatalf("two parses of %q differ", text)
		}
		if rb.Valid() {
			if strings.TrimSpace(rb.Script) == "" {
				t.Fatalf("valid runbook %q has no script", text)
			}
			for _, e := range rb.Env {
				if !ValidEnvName(e.Name) {
					t.Fatalf("valid runbook %q requires env %q", text, e.Name)
				}
			}
			for _, in := range rb.Inputs {
				if Escapes(in) {
					t.Fatalf("valid runbook %q has input %q outside its directory", text, in)
				}
				p, err := src.inside(in)
				if err == nil {
					if rel, rerr := filepath.Rel(dir, p); rerr != nil || rel == ".." || strings.HasPrefix(rel, "../") {
						t.Fatalf("input %q resolves to %s, outside %s", in, p, dir)
					}
				}
			}
		}
		var m map[string]json.RawMessage
		if json.Unmarshal([]byte(vars), &m) != nil {
			return
		}
		env, err := Sanitize(m)
		if err != nil {
			return
		}
		for k, v := range env {
			if !ValidEnvName(k) {
				t.Fatalf("Sanitize accepted the name %q", k)
			}
			if strings.ContainsFunc(v, func(r rune) bool { return unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r' }) {
				t.Fatalf("Sanitize left a control character in %s=%q", k, v)
			}
		}
	})
}
