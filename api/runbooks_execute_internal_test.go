package api

import "testing"

// TestPythonLists: the chain is written as stage0's Python wrote it, in
// the recursion message (repr of a list) and in RUNBOOK_RECURSION_STACK
// (json.dumps), for names with quotes, <, > and &, non-ASCII and
// unprintable characters. The wants are Python 3.11's own output.
func TestPythonLists(t *testing.T) {
	names := []string{"a.md", "it's.md", "x<y>&z.md", "é.md", `say "hi"'s.md`, "tab\there\x7f\u00a0.md", "\U0001F600.md", `back\slash.md`}
	if got, want := pythonList(names),
		`['a.md', "it's.md", 'x<y>&z.md', 'é.md', 'say "hi"\'s.md', 'tab\there\x7f\xa0.md', '😀.md', 'back\\slash.md']`; got != want {
		t.Errorf("pythonList:\n got %s\nwant %s", got, want)
	}
	if got, want := pythonJSONList(names),
		`["a.md", "it's.md", "x<y>&z.md", "\u00e9.md", "say \"hi\"'s.md", "tab\there\u007f\u00a0.md", "\ud83d\ude00.md", "back\\slash.md"]`; got != want {
		t.Errorf("pythonJSONList:\n got %s\nwant %s", got, want)
	}
}
