package postgres

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestStorableRejection(t *testing.T) {
	args := make([]string, 300)
	args[0] = strings.Repeat("a", 70<<10)
	args[1] = "nul\x00 and invalid \xff"
	rej := storable(Rejection{Path: "/v1/x\x00\xff", Reason: "r\x00",
		Request: map[string]any{"args": args, "env_names": []string{"A\x00"}, "host": "h\x00", "n": 3,
			"params": map[string]string{"word\xff": "h\x00i"}}})
	if rej.Path != "/v1/x\uFFFD\uFFFD" || rej.Reason != "r\uFFFD" {
		t.Fatalf("path %q reason %q", rej.Path, rej.Reason)
	}
	got := rej.Request["args"].([]string)
	if len(got) != auditMaxList+1 || !strings.HasSuffix(got[auditMaxList], "(300 elements)") {
		t.Fatalf("%d args kept, last %q", len(got), got[len(got)-1])
	}
	if len(got[0]) > auditMaxString+32 || !strings.HasSuffix(got[0], "(71680 bytes)") {
		t.Fatalf("long arg kept as %d bytes", len(got[0]))
	}
	params := rej.Request["params"].(map[string]string)
	if params["word\uFFFD"] != "h\uFFFDi" {
		t.Fatalf("action params %q", params)
	}
	for _, s := range append(got, rej.Request["env_names"].([]string)[0], rej.Request["host"].(string)) {
		if strings.Contains(s, "\x00") || !utf8.ValidString(s) {
			t.Fatalf("not storable: %q", s)
		}
	}
	if rej.Request["n"] != 3 || args[1] != "nul\x00 and invalid \xff" {
		t.Fatal("values changed that should not have, or the caller's list was modified")
	}
}
