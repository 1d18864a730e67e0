package main

import (
	"encoding/json"
	"io"
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

// TestActionCLI lists and runs an action with the command-line client: the
// remote output and exit code come back as with submit --wait, and a
// secret read from the environment reaches the command.
func TestActionCLI(t *testing.T) {
	path := filepath.Join(t.TempDir(), "orderly.yaml")
	cfg := actionsConfig + `    - name: check-pw
      params:
        - {name: pw, pattern: "[a-z0-9]{4,32}", secret: true}
      command: ["/bin/sh", "-c", "test \"$PW\" = opensesame"]
      env: [{name: PW, value: "{pw}"}]
      roles: [admin]
      hosts: ["act-*"]
    - name: say
      params:
        - {name: who, pattern: "[a-z]{1,10}"}
      command: ["/usr/bin/printf", "hi %s\n", "{who}"]
      roles: [admin]
      hosts: ["act-*"]
`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newStackFrom(t, path, nil, "act-1")
	// cliTee runs `orderly args…` with env, its stderr written to tee too.
	cliTee := func(tee io.Writer, env []string, args ...string) (string, string, error) {
		var out, errb strings.Builder
		err := run(t.Context(), append([]string{"orderly"}, args...), append(env, "ORDERLY_URL="+s.url, "ORDERLY_TOKEN="+s.token),
			strings.NewReader(""), &out, io.MultiWriter(&errb, tee))
		return out.String(), errb.String(), err
	}
	cli := func(env []string, args ...string) (string, string, error) { return cliTee(io.Discard, env, args...) }
	out, errs, err := cli(nil, "action", "ls")
	if err != nil || !strings.Contains(out, "greet") || !strings.Contains(out, "who=[a-z]{1,10}") || !strings.Contains(out, "pw=[a-z0-9]{4,32}*") {
		t.Errorf("action ls: %v %q %q", err, out, errs)
	}
	// One row per action, each template word as a shell would read it: the
	// printf format's line end broke its row in two.
	if rows := strings.Split(strings.TrimSuffix(out, "\n"), "\n"); len(rows) != 4 ||
		!strings.Contains(out, `/usr/bin/printf $'hi %s\n' {who}`) || !strings.Contains(out, `/bin/sh -c 'test "$PW" = opensesame'`) {
		t.Errorf("action ls: want a header and 3 rows, the templates quoted; got\n%s", out)
	}
	out, errs, err = cli(nil, "action", "run", "greet", "--host", "act-1", "-p", "who=cli", "--wait")
	if err != nil || out != "hello cli\n" {
		t.Errorf("action run greet: %v %q %q", err, out, errs)
	}
	_, _, err = cli([]string{"MY_PW=opensesame"}, "action", "run", "check-pw", "--host", "act-1", "--secret-env", "pw=MY_PW", "--wait")
	if err != nil {
		t.Errorf("the right secret: %v", err)
	}
	_, _, err = cli([]string{"MY_PW=wrongpass"}, "action", "run", "check-pw", "--host", "act-1", "--secret-env", "pw=MY_PW", "--wait")
	if code, ok := err.(exitCodeError); !ok || code != 1 {
		t.Errorf("the wrong secret: %v, want the remote exit code 1", err)
	}
	_, _, err = cli(nil, "action", "run", "greet", "--host", "act-1", "-p", "who=a;b")
	if err == nil || !strings.Contains(err.Error(), "params.who") && !strings.Contains(err.Error(), "who") {
		t.Errorf("a bad value: %v", err)
	}
	// A param given twice is the user's mistake, not the last one's win.
	_, _, err = cli(nil, "action", "run", "greet", "--host", "act-1", "-p", "who=one", "-p", "who=two")
	if err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Errorf("a param given twice: %v", err)
	}
	// --correlation-id records the run (and a submission) with that id,
	// and ls --correlation finds them by it: an action run has no body
	// field for it.
	out, errs, err = cli(nil, "action", "run", "greet", "--host", "act-1", "-p", "who=corr", "--correlation-id", "deploy-7")
	if err != nil {
		t.Fatalf("action run --correlation-id: %v %q", err, errs)
	}
	actionID := strings.TrimSpace(out)
	out, errs, err = cli(nil, "submit", "--host", "act-1", "--correlation-id", "deploy-7", "--", "/bin/true")
	if err != nil {
		t.Fatalf("submit --correlation-id: %v %q", err, errs)
	}
	submitID := strings.TrimSpace(out)
	out, errs, err = cli(nil, "ls", "--correlation", "deploy-7", "--json")
	var page struct {
		Orders []struct {
			ID            string `json:"id"`
			CorrelationID string `json:"correlation_id"`
		} `json:"orders"`
	}
	if err != nil || json.Unmarshal([]byte(out), &page) != nil {
		t.Fatalf("ls --correlation: %v %q %q", err, out, errs)
	}
	found := map[string]string{}
	for _, o := range page.Orders {
		found[o.ID] = o.CorrelationID
	}
	if len(found) != 2 || found[actionID] != "deploy-7" || found[submitID] != "deploy-7" {
		t.Errorf("ls --correlation deploy-7: %v, want the run %s and the submission %s", found, actionID, submitID)
	}
	// An API that is not listening yet (a restart) is waited for, as by
	// submit (TestCLISubmitRetries); a later --url wins over ORDERLY_URL.
	addr, stderr := lateProxy(t, s.url)
	out, errs, err = cliTee(stderr, nil, "action", "run", "greet", "--host", "act-1", "-p", "who=late", "--wait", "--url", "http://"+addr)
	if err != nil || out != "hello late\n" || !strings.Contains(errs, "trying again") {
		t.Errorf("action run while the API starts: %v %q %q", err, out, errs)
	}
}
