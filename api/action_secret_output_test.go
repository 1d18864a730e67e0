package api_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/config"
)

// TestActionSecretMaskedInOutput: an action's command that prints its
// secret param (an error quoting its input) leaves it out of the order's
// output, masked with as many * as it has bytes, while the rest of the
// output, a public param's value included, stays as printed. Before, the
// output held it for whoever reads the order (an auditor), live and kept.
func TestActionSecretMaskedInOutput(t *testing.T) {
	echoAction := config.Action{Name: "echo-secret", Hosts: []string{"act-*"}, Roles: []string{"ops"},
		Params: []config.ActionParam{
			{Name: "label", Pattern: "[a-z]{1,16}"},
			{Name: "pw", Pattern: "[A-Za-z0-9]{8,64}", Secret: true},
		},
		Command: []string{"/bin/sh", "-c", `echo "label $1"; echo "bad password for $1: $PW, $PW" >&2; exit 1`, "sh", "{label}"},
		Env:     []config.ActionEnv{{Name: "PW", Value: "{pw}"}}}
	acts := config.Actions{Bus: "system", Definitions: []config.Action{echoAction}}
	e := newAPIEnv(t, envOptions{hosts: []string{"act-1"}, actions: acts, workerActions: acts})
	const secret = "Sup3rS3cretValue"
	code, b := e.do("alice", "POST", "/v1/actions/echo-secret/run?wait=20",
		map[string]any{"host": "act-1", "params": map[string]any{"label": "abc", "pw": secret}})
	var o api.Order
	if code != 200 || json.Unmarshal(b, &o) != nil || o.Status != "failed" || o.Result == nil {
		t.Fatalf("run: %d %s", code, b)
	}
	mask := strings.Repeat("*", len(secret))
	if got, want := o.Result.Stderr.Content, "bad password for abc: "+mask+", "+mask+"\n"; got != want || o.Result.Stderr.Bytes != int64(len(want)) {
		t.Fatalf("stderr %q (%d bytes), want %q", got, o.Result.Stderr.Bytes, want)
	}
	if got := o.Result.Stdout.Content; got != "label abc\n" {
		t.Fatalf("stdout %q, want the public value as printed", got)
	}
}
