package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api/client"
)

// actsOnTerminal reports whether s holds a character a terminal acts on
// besides a line end and a tab: ESC starts CSI and OSC sequences (the
// title, the clipboard through OSC 52, a cleared screen), BEL ends OSC, a
// carriage return overwrites the line, C1 controls are CSI and OSC alone,
// and the bidi overrides reorder what is shown.
func actsOnTerminal(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool {
		return r < ' ' && r != '\n' && r != '\t' || r >= 0x7f && r < 0xa0 || r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069
	})
}

// TestCLIShowsOthersTextWithoutEscapes: the text views of the CLI (`get`,
// `hosts`, `hosts HOST`, `runbook history`) write other parties' text (a
// command's output, an order's error, a JWT's principal name, a worker's
// reported version) with every character a terminal acts on as its
// escape. Printed raw, a command that printed ESC ] 52 wrote the
// reader's clipboard and ESC [ 2 J cleared the screen; `orderly logs`
// still writes the bytes.
func TestCLIShowsOthersTextWithoutEscapes(t *testing.T) {
	const hostile = "a\x1b]52;c;cm0gLXJmIH4K\x07b\x1b[2J\rc\u009b31m\u202ed"
	at := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	zero := 0
	msg := "exit with " + hostile + "\nforged: row"
	o := client.Order{ID: uuid.New(), Host: "web-3", Status: "failed", Command: "sh", Principal: "jwt:" + hostile,
		RunAs: hostile, SubmittedAt: at, StartedAt: &at, FinishedAt: &at,
		Cancel: &client.Cancellation{Actor: hostile, Signal: "SIGTERM", RequestedAt: at},
		Result: &client.Result{ExitCode: &zero, Error: &msg,
			Stdout: client.Stream{Content: "line1\n" + hostile + "\n\tindented\n", Bytes: 40},
			Stderr: client.Stream{Content: hostile, Bytes: 30}}}
	var out strings.Builder
	if err := printOrder(&out, &o); err != nil {
		t.Fatal(err)
	}
	if actsOnTerminal(out.String()) {
		t.Errorf("get: %q holds a character a terminal acts on", out.String())
	}
	for _, w := range []string{`a\x1b]52;c;cm0gLXJmIH4K\x07b\x1b[2J\rc\u009b31m\u202ed`, "line1\n", "\n\tindented\n", `Error:     exit with a\x1b`, `\nforged: row`} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("get: %q missing from\n%s", w, out.String())
		}
	}

	// submit --wait's last line: the order's error after its signal.
	sig := "SIGKILL"
	var stderr strings.Builder
	killed := client.Order{ID: o.ID, Status: client.StatusKilled, Result: &client.Result{Signal: &sig, Error: &msg}}
	_ = exitOf(&stderr, &killed)
	if actsOnTerminal(stderr.String()) || !strings.Contains(stderr.String(), `a\x1b]52`) {
		t.Errorf("submit --wait: want the error escaped, got %q", stderr.String())
	}
	if p := progress(&client.Order{Status: client.StatusRejected, Result: &client.Result{Error: &msg}}); actsOnTerminal(p) || strings.Contains(p, "\n") {
		t.Errorf("--hosts --wait's progress: %q holds a character a terminal acts on, or a line end", p)
	}

	esc := func(s string) string {
		r := strings.NewReplacer("\x1b", `\u001b`, "\x07", `\u0007`, "\r", `\r`, "\u009b", `\u009b`, "\u202e", `\u202e`)
		return r.Replace(s)
	}
	host := `{"host":"h1","online":true,"last_seen":"2026-12-04T21:00:00Z","version":"` + esc(hostile) + `","instance":"h1/a",` +
		`"current_order":null,"queue_depth":0,"restore_guard":"on","standby":{"instance":"h1/` + esc(hostile) + `","version":"` + esc(hostile) +
		`","waiting_since":"2026-12-04T21:00:00Z","last_seen":"2026-12-04T21:00:00Z"}}`
	run := `{"id":"` + uuid.NewString() + `","batch_id":null,"kind":"runbook","host":"h1","status":"succeeded","command":"sh","args":[],` +
		`"env_names":[],"timeout_seconds":60,"run_as":"","dry_run":false,"idempotent":false,"principal":"` + esc(hostile) + `",` +
		`"source":"rest","correlation_id":"","submitted_at":"2026-12-04T21:00:00Z","started_at":null,"finished_at":null,` +
		`"attempt":1,"policy":{"decision":"allow","matched":[]},"result":null}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/v1/hosts":
			_, _ = w.Write([]byte(`{"hosts":[` + host + `]}`))
		case r.URL.Path == "/v1/hosts/h1":
			_, _ = w.Write([]byte(host))
		case strings.HasSuffix(r.URL.Path, "/runs") || strings.Contains(r.URL.Path, "/history"):
			_, _ = w.Write([]byte(`{"orders":[` + run + `],"next_cursor":null}`))
		default:
			t.Logf("unexpected request %s", r.URL)
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	env := []string{"ORDERLY_URL=" + srv.URL, "ORDERLY_TOKEN=ord_abc"}
	for _, args := range [][]string{{"hosts"}, {"hosts", "h1"}, {"runbook", "history", "deploy.sh"}} {
		r := cli(t, env, "", args...)
		wantExit(t, r, 0)
		if actsOnTerminal(r.stdout) || !strings.Contains(r.stdout, `a\x1b]52`) {
			t.Errorf("%s: want the hostile text escaped, got %q", strings.Join(args, " "), r.stdout)
		}
	}
}

// TestCLIRunbookViewsEscapeTheRunbooksText: `runbook show` wrote a
// runbook's file name and warnings escaped, but `runbook ls` wrote the
// file name raw and `runbook validate` its warnings (which quote the
// runbook's own name, "Runbook name '…' does not match filename") and
// file raw: the runbook's author reached the reader's terminal (OSC 52,
// a cleared screen, a forged line).
func TestCLIRunbookViewsEscapeTheRunbooksText(t *testing.T) {
	const hostile = `a\u001b]52;c;cm0gLXJmIH4K\u0007b\u001b[2J\rc\u009b31m\u202ed`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/v1/runbooks":
			_, _ = w.Write([]byte(`{"runbooks":[{"file":"` + hostile + `.md","name":"x","sha256":"00","valid":true,"problems":[],"warnings":[]}]}`))
		case strings.HasSuffix(r.URL.Path, "/validate"):
			_, _ = w.Write([]byte(`{"file":"` + hostile + `.md","valid":true,"warnings":["Runbook name '` + hostile + `\nforged: line' does not match filename 'x'"]}`))
		default:
			t.Logf("unexpected request %s", r.URL)
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	env := []string{"ORDERLY_URL=" + srv.URL, "ORDERLY_TOKEN=ord_abc"}
	for _, args := range [][]string{{"runbook", "ls"}, {"runbook", "validate", "x.md"}} {
		r := cli(t, env, "", args...)
		wantExit(t, r, 0)
		all := r.stdout + r.stderr
		if actsOnTerminal(all) || !strings.Contains(all, `a\x1b]52`) {
			t.Errorf("%s: want the runbook's text escaped, got stdout %q, stderr %q", strings.Join(args, " "), r.stdout, r.stderr)
		}
		if strings.Contains(all, "\nforged: line") {
			t.Errorf("%s: a warning's line end forged a line: %q", strings.Join(args, " "), r.stderr)
		}
	}
}
