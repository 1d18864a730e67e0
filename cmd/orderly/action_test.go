package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestShippedPolkitRuleMatchesExample: deploy/polkit/50-orderly.rules is
// what `orderly action polkit-rule` prints for the example config, so the
// unit pattern lives in one place (the config) and the shipped rule
// cannot drift from it.
func TestShippedPolkitRuleMatchesExample(t *testing.T) {
	var out, errb bytes.Buffer
	err := run(t.Context(), []string{"orderly", "action", "polkit-rule", "--config", "../../deploy/orderly.example.yaml"},
		nil, strings.NewReader(""), &out, &errb)
	if err != nil {
		t.Fatalf("polkit-rule: %v: %s", err, errb.String())
	}
	shipped, err := os.ReadFile("../../deploy/polkit/50-orderly.rules")
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != string(shipped) {
		t.Errorf("deploy/polkit/50-orderly.rules differs from `orderly action polkit-rule --config deploy/orderly.example.yaml`:\n%s", out.String())
	}
	if !strings.Contains(out.String(), `/^example@(?:[0-9]{4})\.service$/`) || !strings.Contains(out.String(), `verbs: ["restart"]`) {
		t.Errorf("the rule does not confine to the example's pattern and verb:\n%s", out.String())
	}
	out.Reset()
	err = run(t.Context(), []string{"orderly", "action", "polkit-rule", "--config", "../../deploy/orderly.example.yaml", "nope"},
		nil, strings.NewReader(""), &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("an unknown action: %v", err)
	}
}

// TestPolkitRuleFromServesConfig: the rule is printed from orderly
// serve's own config (orderly-serve.service's /etc/orderly/orderly.yaml,
// or the --config a newcomer gave `make run`) whose compat surfaces leave
// their host to serve, as compat.md says they may. It was refused with
// "compat.httpexec.host: must name the worker host", even with --host
// given.
func TestPolkitRuleFromServesConfig(t *testing.T) {
	path := t.TempDir() + "/orderly.yaml"
	const cfg = `acl:
  allow: ["127.0.0.0/8"]
runbooks: {dir: /srv/runbooks}
compat:
  httpexec: {enabled: true, exec_root: /srv/httpexec/bin, principal: httpexec-client}
  stage0: {enabled: true, jwt_secret: 0123456789abcdef0123456789abcdef, jwt_issuer: dev-idp, jwt_audience: dev-api}
actions:
  definitions:
    - name: restart-example
      params:
        - {name: id, pattern: "[0-9]{4}", units: "example@*.service"}
      systemd: {verb: restart, unit: "example@{id}.service"}
      roles: [ops]
      hosts: ["web-*"]
`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"action", "polkit-rule", "restart-example", "--config", path},
		{"action", "polkit-rule", "restart-example", "--config", path, "--host", "web-3"},
	} {
		out, err := runCmd(t, args...)
		if err != nil || !strings.Contains(out, `/^example@(?:[0-9]{4})\.service$/`) {
			t.Errorf("%v: %v\n%s", args, err, out)
		}
	}
}

// TestClientFlagMistakes: flags that cannot mean anything are refused
// before any request, naming the flag.
func TestClientFlagMistakes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"action", "polkit-rule", "restart-example"}, "pass the config that defines them with --config"},
		{[]string{"submit", "--host", "h", "--retry-for", "-1s", "--", "true"}, `"--retry-for" flag: must not be negative`},
		{[]string{"action", "run", "x", "--host", "h", "--retry-for", "-5m"}, `"--retry-for" flag: must not be negative`},
		{[]string{"ls", "--since", "2h", "--until", "3h"}, "--since 2h is not before --until 3h"},
	} {
		out, err := runCmd(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v (%s), want an error with %q", tc.args, err, out, tc.want)
		}
	}
}
