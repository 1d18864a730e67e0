package order

import "testing"

// TestCodeOfText: an *Error's text gives its code back; a text that only
// looks like one (another word before ": ", no separator) gives none.
func TestCodeOfText(t *testing.T) {
	for _, c := range []struct {
		text string
		want Code
		ok   bool
	}{
		{Errorf(CodeForbidden, "command denied by rule %q", "ops").Error(), CodeForbidden, true},
		{(&Error{Code: CodeUnavailable, Message: "prepare the run", Err: errString("disk full")}).Error(), CodeUnavailable, true},
		{Errorf(CodePreconditionFailed, "x").Error(), CodePreconditionFailed, true},
		{"timed out after 30s", "", false},
		{"canceled by alice", "", false},
		{"start: exec: no such file", "", false},
		{"forbidden", "", false},
		{"Forbidden: no", "", false},
		{"", "", false},
		// A worker's refusal of an order a newer API accepted, as
		// workers before its code wrote it, and as they write it now.
		{NewerAPIRefusal + `"require_check", unknown to this worker (version 1.0): an API newer than the worker accepted it; upgrade the worker`, CodeUnprocessable, true},
		{Errorf(CodeUnprocessable, "%s\"require_check\"", NewerAPIRefusal).Error(), CodeUnprocessable, true},
	} {
		if got, ok := CodeOfText(c.text); got != c.want || ok != c.ok {
			t.Errorf("CodeOfText(%q) = %q, %v; want %q, %v", c.text, got, ok, c.want, c.ok)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }
