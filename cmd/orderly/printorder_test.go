package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api/client"
)

// TestGetShowsWhatHappened checks that `orderly get` tells an order that
// never started from one that ran and printed nothing, and names who
// canceled it, as the API's answer does.
func TestGetShowsWhatHappened(t *testing.T) {
	at := time.Date(2025, 1, 31, 15, 4, 5, 0, time.UTC)
	later := at.Add(3 * time.Second)
	canceledBy := "canceled by alice"
	notInPath := `forbidden: command "/nonexistent/cmd" is not inside this host's command_path`
	lost := "its host web-3 was forgotten by alice while it ran: its worker never came back to say how it ended"
	zero := 0
	cancel := &client.Cancellation{Actor: "alice", Signal: "SIGTERM", RequestedAt: later}
	for _, c := range []struct {
		name         string
		o            client.Order
		want, absent []string
	}{
		{"canceled while queued",
			client.Order{Status: "canceled", SubmittedAt: at, FinishedAt: &later, Cancel: cancel,
				Result: &client.Result{Error: &canceledBy}},
			[]string{"Started:   -", "Cancel:    by alice at " + localTime(&later) + "\n", "Error:     canceled by alice"},
			[]string{"Duration", "--- stdout", "SIGTERM"}},
		{"killed while running",
			client.Order{Status: "killed", SubmittedAt: at, StartedAt: &at, FinishedAt: &later, Cancel: cancel,
				Result: &client.Result{DurationMS: 3000}},
			[]string{"Cancel:    by alice at " + localTime(&later) + " (SIGTERM)", "Duration:  3s", "--- stdout (0 bytes) ---"},
			nil},
		{"interrupted: its worker was lost",
			client.Order{Status: "interrupted", SubmittedAt: at, StartedAt: &at, FinishedAt: &later,
				Result: &client.Result{Error: &lost}},
			[]string{"Duration:  unknown\n", "Error:     " + lost,
				"--- stdout (0 bytes kept before its worker was lost; the rest unknown) ---"},
			[]string{"0s", "--- stdout (0 bytes) ---"}},
		// Its successor stores what reached the live stream before the
		// worker was lost (docs/sql.md): get hid it, as if nothing was kept.
		{"interrupted after printing",
			client.Order{Status: "interrupted", SubmittedAt: at, StartedAt: &at, FinishedAt: &later,
				Result: &client.Result{Error: &lost, Stdout: client.Stream{Content: "before-kill\n", Bytes: 12}}},
			[]string{"Duration:  unknown\n",
				"--- stdout (12 bytes kept before its worker was lost; the rest unknown) ---\nbefore-kill\n",
				"--- stderr (0 bytes kept before its worker was lost; the rest unknown) ---"},
			[]string{"0s", "--- stdout (12 bytes) ---"}},
		{"rejected by the worker's host policy",
			client.Order{Status: "rejected", SubmittedAt: at, StartedAt: &at, FinishedAt: &at,
				Result: &client.Result{Error: &notInPath}},
			[]string{"Error:     " + notInPath},
			[]string{"Duration", "--- stdout"}},
		{"ran and printed nothing",
			client.Order{Status: "succeeded", SubmittedAt: at, StartedAt: &at, FinishedAt: &later,
				Result: &client.Result{ExitCode: &zero, DurationMS: 5}},
			[]string{"Duration:  5ms", "--- stdout (0 bytes) ---", "--- stderr (0 bytes) ---"},
			[]string{"Cancel"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.o.ID, c.o.Host, c.o.Command, c.o.Principal = uuid.New(), "web-3", "true", "alice"
			var out strings.Builder
			if err := printOrder(&out, &c.o); err != nil {
				t.Fatal(err)
			}
			for _, w := range c.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("%q missing from\n%s", w, out.String())
				}
			}
			for _, a := range c.absent {
				if strings.Contains(out.String(), a) {
					t.Errorf("%q in\n%s", a, out.String())
				}
			}
		})
	}
}

// TestCommandLineEscapesWhatDoesNotPrint checks that a command line, which
// is another principal's text on an admin's terminal, is printed on one
// line with nothing a terminal acts on: an argument's newline forged rows
// in `orderly ls`, and a carriage return or a bidi override made it read
// as another command.
func TestCommandLineEscapesWhatDoesNotPrint(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-la", "/tmp"}, "ls -la /tmp"},
		{[]string{"it's", "a b"}, `ls 'it'\''s' 'a b'`},
		{[]string{"x\n0193a5c4-0000-7000-8000-000000000000  web-3  succeeded"}, `ls $'x\n0193a5c4-0000-7000-8000-000000000000  web-3  succeeded'`},
		{[]string{"/srv\recho pwned"}, `ls $'/srv\recho pwned'`},
		{[]string{"it's\t\\"}, `ls $'it\'s\t\\'`},
		{[]string{"abc\u202edcba", "\u009b31m", "\u2028"}, `ls $'abc\u202edcba' $'\u009b31m' $'\u2028'`},
		{[]string{"héllo 日本"}, "ls 'héllo 日本'"},
	} {
		got := commandLine(&client.Order{Command: "ls", Args: c.args})
		if got != c.want {
			t.Errorf("%q: got %s, want %s", c.args, got, c.want)
		}
		if strings.ContainsFunc(got, func(r rune) bool { return r < ' ' || r >= 0x7f && r < 0xa0 || r == '\u202e' || r == '\u2028' }) {
			t.Errorf("%q: %q holds a character a terminal acts on", c.args, got)
		}
	}
}

// TestLogsSaysWhatOfAnInterruptedOrdersOutputWasKept checks that `orderly
// logs` of an order whose worker was lost says on stderr what of its
// output was kept: printing nothing and exiting 0 read as a command that
// ran and printed nothing, and the part its successor stored (what
// reached the live stream before) as its whole output; the note said
// "not recorded" under the part it had just printed.
func TestLogsSaysWhatOfAnInterruptedOrdersOutputWasKept(t *testing.T) {
	const id = "01a23dc1-dcce-7c41-9b7d-4b19813f6c3b"
	for _, c := range []struct {
		status, started, stdout, note string
	}{
		{"interrupted", `"2026-12-03T21:14:04.924561Z"`, "", "orderly: order " + id + " was interrupted: its worker was lost while it ran; none of its output was kept\n"},
		{"interrupted", `"2026-12-03T21:14:04.924561Z"`, "before-kill\n", "orderly: order " + id + " was interrupted: its worker was lost while it ran; only what it printed before that was kept (12 bytes of stdout, 0 of stderr), not what came after\n"},
		{"canceled", "null", "", ""},
	} {
		body := `{"id":"` + id + `","batch_id":null,"kind":"exec","host":"web-2","status":"` + c.status + `",` +
			`"command":"sleep","args":["120"],"env_names":[],"timeout_seconds":60,"run_as":"","dry_run":false,` +
			`"idempotent":false,"principal":"admin","source":"rest","correlation_id":"",` +
			`"submitted_at":"2026-12-03T21:14:04.883787Z","started_at":` + c.started + `,"finished_at":"2026-12-03T21:14:32.353858Z",` +
			`"attempt":1,"policy":{"decision":"allow","matched":["admin:allow:.*"]},` +
			`"result":{"exit_code":null,"signal":null,"duration_ms":0,"error":"lost",` +
			`"stdout":{"content":` + strconv.Quote(c.stdout) + `,"encode":null,"bytes":` + strconv.Itoa(len(c.stdout)) + `,"truncated":false,"sha256":""},` +
			`"stderr":{"content":"","encode":null,"bytes":0,"truncated":false,"sha256":""}}}`
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/v1/orders/"+id {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, body)
		}))
		r := cli(t, []string{"ORDERLY_URL=" + srv.URL, "ORDERLY_TOKEN=t"}, "", "logs", id)
		srv.Close()
		wantExit(t, r, 0)
		if r.stdout != c.stdout || r.stderr != c.note {
			t.Errorf("%s: stdout %q, stderr %q; want stdout %q and stderr %q", c.status, r.stdout, r.stderr, c.stdout, c.note)
		}
	}
}
