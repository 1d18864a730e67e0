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
