package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/api"
)

const actionsConfig = `
actions:
  definitions:
    - name: greet
      params:
        - {name: who, pattern: "[a-z]{1,10}"}
      command: ["/bin/echo", "hello", "{who}"]
      roles: [admin]
      hosts: ["act-*"]
`

// TestActionsWiredAndReloaded runs an action through the API and worker
// as orderly wires them, then reloads the config: a new action appears
// in the API and on the worker at once, and a file whose actions do not
// compile is refused whole, leaving the running ones.
func TestActionsWiredAndReloaded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "orderly.yaml")
	if err := os.WriteFile(path, []byte(actionsConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newStackFrom(t, path, nil, "act-1")
	run := func(name, who string) (int, api.Order, []byte) {
		code, b := s.do("POST", "/v1/actions/"+name+"/run?wait=20", map[string]any{"host": "act-1", "params": map[string]any{"who": who}})
		var o api.Order
		_ = json.Unmarshal(b, &o)
		return code, o, b
	}
	code, o, b := run("greet", "world")
	if code != 200 || o.Status != "succeeded" || o.Result.Stdout.Content != "hello world\n" {
		t.Fatalf("greet: %d %s", code, b)
	}
	code, _, b = run("shout", "world")
	wantError(t, code, b, 404, "not_found")

	reload := func(text string) (int, []byte) {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return s.do("POST", "/v1/admin/reload", nil)
	}
	withShout := actionsConfig + `    - name: shout
      params:
        - {name: who, pattern: "[a-z]{1,10}"}
      command: ["/bin/echo", "HEY", "{who}"]
      roles: [admin]
      hosts: ["act-*"]
`
	if code, b := reload(withShout); code != 200 {
		t.Fatalf("reload: %d %s", code, b)
	}
	code, o, b = run("shout", "you")
	if code != 200 || o.Status != "succeeded" || o.Result.Stdout.Content != "HEY you\n" {
		t.Fatalf("shout after the reload: %d %s", code, b)
	}
	// A string param without a pattern does not compile: refused, and
	// both actions still run.
	broken := strings.Replace(withShout, `pattern: "[a-z]{1,10}"}`, `type: string}`, 1)
	if code, b := reload(broken); code < 400 || !strings.Contains(string(b), "needs a pattern") {
		t.Fatalf("a broken actions section: %d %s, want a refusal naming the problem", code, b)
	}
	for name, want := range map[string]string{"greet": "hello x\n", "shout": "HEY x\n"} {
		if code, o, b := run(name, "x"); code != 200 || o.Result.Stdout.Content != want {
			t.Errorf("%s after the refused reload: %d %s", name, code, b)
		}
	}
}
