package api

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// TestOrderTitleShowsWhatRuns: a word that holds what does not print (a
// bidi override, a line break, a no-break space) is quoted, so a page
// shows the command that runs and not one its characters draw; a long
// title is cut between characters.
func TestOrderTitleShowsWhatRuns(t *testing.T) {
	for _, tc := range []struct {
		command string
		args    []string
		want    string
	}{
		{"echo", []string{"plain", "-n"}, "echo plain -n"},
		{"echo", []string{"two words", ""}, `echo "two words" ""`},
		{"echo", []string{"\u202egnp.exe"}, `echo "\u202egnp.exe"`},
		{"echo", []string{"a\nb", "tab\there", "no\u00a0break"}, `echo "a\nb" "tab\there" "no\u00a0break"`},
		{"ec\u200bho", nil, `"ec\u200bho"`},
		{"echo", []string{"é"}, "echo é"},
	} {
		if got := orderTitle(Order{Command: tc.command, Args: tc.args}); got != tc.want {
			t.Errorf("%q %q: title %s, want %s", tc.command, tc.args, got, tc.want)
		}
	}
	a := orderTitle(Order{Action: &OrderAction{Name: "greet", Params: map[string]string{"who": "\u202ebob", "n": "2"}, SecretParams: []string{"pin"}}})
	if want := `action greet n=2 who="\u202ebob" pin=•••`; a != want {
		t.Errorf("action title %s, want %s", a, want)
	}
	if rb := orderTitle(Order{Runbook: "Tidy \u202edm.exe"}); rb != `runbook "Tidy \u202edm.exe"` {
		t.Errorf("runbook title %s", rb)
	}
	if rb := orderTitle(Order{Runbook: "a#b.md"}); rb != "runbook a#b.md" {
		t.Errorf("runbook title %s", rb)
	}
	long := orderTitle(Order{Command: "echo", Args: []string{strings.Repeat("é", 150)}})
	if !utf8.ValidString(long) || !strings.HasSuffix(long, "…") || len(long) > 200+len("…") {
		t.Errorf("a long title is cut inside a character or not at all: %q", long)
	}
}
