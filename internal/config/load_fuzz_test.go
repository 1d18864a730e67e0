package config

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzBuildFile gives the configuration loader a file's bytes, as YAML
// and as TOML, and Validate what it builds. Neither panics, and a file
// that loads and validates loads again to the same configuration (the
// drift check compares such loads).
func FuzzBuildFile(f *testing.F) {
	example, err := os.ReadFile(filepath.Join("..", "..", "deploy", "orderly.example.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example, false)
	for _, s := range []string{
		"http:\n  listen: 127.0.0.1:0\n  max_body_bytes: 1e400\n",
		"worker:\n  command_path: [/usr/bin, bin]\n  allow: ['^ls(']\n",
		"auth:\n  tokens:\n    - {name: a, sha256: zz, roles: [ops]}\n  jwt: {algorithm: HS256, secret: '', leeway: -1s}\n",
		"a: &a [*a, *a, *a]\n", "? [a]\n: b\n", "limits: {max_timeout: 99999999999h}\n", "\xff\xfe",
		"runbooks: {dir: ../../etc}\nactions: {definitions: [{name: x, command: ['{y}']}]}\n",
		"compat:\n  httpexec: {enabled: true, exec_root: relative}\n  vigrid: {users: {a: ''}}\n",
	} {
		f.Add([]byte(s), false)
	}
	f.Add([]byte("[http]\nlisten = \"127.0.0.1:0\"\n[worker]\ncommand_path = [\"/usr/bin\"]\n"), true)
	f.Add([]byte("[[auth.tokens]]\nname = 1\n"), true)
	f.Fuzz(func(t *testing.T, data []byte, isTOML bool) {
		name := "orderly.yaml"
		if isTOML {
			name = "orderly.toml"
		}
		cfg, _, err := buildFile(name, data, nil, nil)
		if err != nil {
			return
		}
		if cfg.Validate() != nil {
			return
		}
		again, _, err := buildFile(name, data, nil, nil)
		if err != nil {
			t.Fatalf("%q loaded once, then not: %v", data, err)
		}
		if !reflect.DeepEqual(cfg, again) {
			t.Fatalf("%q loads to two configurations", data)
		}
	})
}
