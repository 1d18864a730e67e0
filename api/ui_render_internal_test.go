package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
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

// TestRunPageDurationSaysWhatIsKnown: the run page of an order whose
// worker was lost showed "0s" and an empty output, as if it ran for no
// time and printed nothing; one canceled while queued showed "0s" too.
// Only an order that ran to a recorded end shows a duration. An
// interrupted one's page says what of its output was kept (what reached
// the live stream before its worker was lost), not that none was.
func TestRunPageDurationSaysWhatIsKnown(t *testing.T) {
	at := time.Date(2026, 12, 3, 21, 14, 4, 0, time.UTC)
	later := at.Add(28 * time.Second)
	lost := "its host web-2 was forgotten by admin while it ran: its worker never came back to say how it ended"
	canceled := "canceled by admin"
	zero := 0
	for _, tc := range []struct {
		name     string
		o        Order
		duration string
		note     string
	}{
		{"interrupted", Order{Status: order.StatusInterrupted, StartedAt: &at, FinishedAt: &later,
			Result: &Result{Error: &lost}}, "unknown", "none of its output was kept"},
		// Its successor stored what reached the live stream before the
		// worker was lost: the page showed it under "its output was not
		// recorded".
		{"interrupted after printing", Order{Status: order.StatusInterrupted, StartedAt: &at, FinishedAt: &later,
			Result: &Result{Error: &lost, Stdout: Stream{Content: "before-kill\n", Bytes: 12}}}, "unknown",
			"only what it printed before that was kept, not what came after"},
		{"canceled while queued", Order{Status: order.StatusCanceled, FinishedAt: &later,
			Result: &Result{Error: &canceled}}, "–", ""},
		{"rejected by the worker", Order{Status: order.StatusRejected, StartedAt: &at, FinishedAt: &at,
			Result: &Result{Error: &canceled}}, "–", ""},
		{"running", Order{Status: order.StatusRunning, StartedAt: &at}, "–", ""},
		{"succeeded", Order{Status: order.StatusSucceeded, StartedAt: &at, FinishedAt: &later,
			Result: &Result{ExitCode: &zero, DurationMS: 28000}}, "28s", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.ID, tc.o.Host, tc.o.Command, tc.o.SubmittedAt = uuid.New(), "web-2", "sleep", at
			rec := httptest.NewRecorder()
			mustParsePages().render(rec, httptest.NewRequest(http.MethodGet, "/ui/orders/"+tc.o.ID.String(), nil),
				http.StatusOK, "run", pageData{Title: orderTitle(tc.o), D: newRunView(tc.o)})
			page := rec.Body.String()
			if want := `<dd id="duration">` + tc.duration + `</dd>`; !strings.Contains(page, want) {
				t.Errorf("%s missing from the page:\n%s", want, page)
			}
			for _, note := range []string{"none of its output was kept", "only what it printed before that was kept, not what came after"} {
				if got := strings.Contains(page, note); got != (note == tc.note) {
					t.Errorf("the note %q: shown %v, want %v", note, got, !got)
				}
			}
			if tc.o.Result != nil && tc.o.Result.Stdout.Content != "" && !strings.Contains(page, tc.o.Result.Stdout.Content) {
				t.Errorf("the kept output %q missing from the page", tc.o.Result.Stdout.Content)
			}
		})
	}
}
