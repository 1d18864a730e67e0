package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/testenv"
)

// cliResult is what one in-process run of the CLI printed and returned.
type cliResult struct {
	stdout, stderr string
	err            error
}

// cli runs `orderly args…` in-process exactly as main does, with environ
// as its whole environment.
func cli(t *testing.T, environ []string, stdin string, args ...string) cliResult {
	t.Helper()
	return cliTee(t, environ, stdin, io.Discard, args...)
}

// cliTee is cli with the CLI's stderr written to tee too, as it comes.
func cliTee(t *testing.T, environ []string, stdin string, tee io.Writer, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	err := run(ctx, append([]string{"orderly"}, args...), environ, strings.NewReader(stdin), &out, io.MultiWriter(&errb, tee))
	return cliResult{out.String(), errb.String(), err}
}

func (s *stack) cliEnv() []string {
	return []string{"ORDERLY_URL=" + s.url, "ORDERLY_TOKEN=" + s.token}
}

// wantExit checks the error run returned against the exit status main
// would give it: 0 for nil, the code of an exitCodeError, 1 otherwise.
func wantExit(t *testing.T, r cliResult, code int) {
	t.Helper()
	got := 0
	var ee exitCodeError
	switch {
	case r.err == nil:
	case errors.As(r.err, &ee):
		got = int(ee)
	default:
		got = 1
	}
	if got != code {
		t.Fatalf("exit = %d (err %v), want %d\nstdout: %q\nstderr: %q", got, r.err, code, r.stdout, r.stderr)
	}
}

func TestCLISubmitWait(t *testing.T) {
	s := newStack(t, "h1")
	env := s.cliEnv()
	binary := "\x00\x01zero\x00\x00\x00\x00\xff\xfe end\n"
	stdinFile := filepath.Join(t.TempDir(), "in.txt")
	if err := os.WriteFile(stdinFile, []byte("from a file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		stdin      string
		args       []string
		exit       int
		stdout     string
		stderrHas  string
		errHas     string
		stdoutOnly bool // stdout must equal exactly (always) and stderr be empty
	}{
		{name: "echo", args: []string{"--", "echo", "hi"}, stdout: "hi\n", stdoutOnly: true},
		{name: "no dashes", args: []string{"echo", "-n", "hi"}, stdout: "hi", stdoutOnly: true},
		{name: "exit 3", args: []string{"--", "sh", "-c", "exit 3"}, exit: 3},
		{name: "false", args: []string{"--", "false"}, exit: 1},
		{name: "stderr", args: []string{"--", "sh", "-c", "echo out; echo oops >&2; exit 2"}, exit: 2, stdout: "out\n", stderrHas: "oops\n"},
		{name: "stdin", stdin: "line one\nline two\n", args: []string{"--stdin", "-", "--", "cat"}, stdout: "line one\nline two\n", stdoutOnly: true},
		{name: "stdin file", args: []string{"--stdin-file", stdinFile, "--", "cat"}, stdout: "from a file\n", stdoutOnly: true},
		{name: "binary base64", stdin: binary, args: []string{"--stdin", "-", "--", "cat"}, stdout: binary, stdoutOnly: true},
		{name: "binary base85", stdin: binary, args: []string{"--encode", "base85", "--stdin", "-", "--", "cat"}, stdout: binary, stdoutOnly: true},
		{name: "env", args: []string{"--env", "GREETING=hello, world", "--", "sh", "-c", `printf %s "$GREETING"`}, stdout: "hello, world", stdoutOnly: true},
		{name: "signal", args: []string{"--", "sh", "-c", "kill -USR1 $$"}, exit: 128 + 10, stderrHas: "ended by SIGUSR1"},
		{name: "timeout", args: []string{"--timeout", "300ms", "--", "sleep", "30"}, exit: 128 + 15, stderrHas: "timed out"},
		{name: "rejected", args: []string{"--", "no-such-command-here"}, exit: 1, errHas: "rejected"},
		{name: "dry run", args: []string{"--dry-run", "--", "echo", "hi"}, stderrHas: "dry run: succeeded, policy allow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"submit", "--host", "h1", "--wait"}, tc.args...)
			r := cli(t, env, tc.stdin, args...)
			wantExit(t, r, tc.exit)
			if r.stdout != tc.stdout {
				t.Errorf("stdout = %q, want %q", r.stdout, tc.stdout)
			}
			if tc.stdoutOnly && r.stderr != "" {
				t.Errorf("stderr = %q, want nothing", r.stderr)
			}
			if !strings.Contains(r.stderr, tc.stderrHas) {
				t.Errorf("stderr = %q, want it to contain %q", r.stderr, tc.stderrHas)
			}
			if tc.errHas != "" && (r.err == nil || !strings.Contains(r.err.Error(), tc.errHas)) {
				t.Errorf("error = %v, want it to contain %q", r.err, tc.errHas)
			}
		})
	}
}

func TestCLIOrdersHostsCancel(t *testing.T) {
	s := newStack(t, "h1")
	env := s.cliEnv()

	r := cli(t, env, "", "submit", "--host", "h1", "--", "echo", "hello there")
	wantExit(t, r, 0)
	id := strings.TrimSpace(r.stdout)
	uid, err := uuid.Parse(id)
	if err != nil {
		t.Fatalf("submit printed %q, want an order id", r.stdout)
	}
	s.waitFor(uid, 20*time.Second, terminal)

	r = cli(t, env, "", "get", id)
	wantExit(t, r, 0)
	for _, want := range []string{id, "h1", "succeeded (exit 0)", "echo 'hello there'", "--- stdout (12 bytes) ---\nhello there\n", "--- stderr (0 bytes) ---"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("get: %q missing from\n%s", want, r.stdout)
		}
	}

	r = cli(t, env, "", "logs", id)
	wantExit(t, r, 0)
	if r.stdout != "hello there\n" || r.stderr != "" {
		t.Errorf("logs: stdout %q stderr %q", r.stdout, r.stderr)
	}
	r = cli(t, env, "", "logs", "-f", id)
	wantExit(t, r, 0)
	if r.stdout != "hello there\n" {
		t.Errorf("logs -f of a finished order: stdout %q", r.stdout)
	}

	r = cli(t, env, "", "ls", "--host", "h1")
	wantExit(t, r, 0)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "COMMAND") {
		t.Fatalf("ls:\n%s", r.stdout)
	}
	if f := strings.Fields(lines[1]); len(f) < 6 || f[0] != id || f[1] != "h1" || f[2] != "succeeded" || f[3] != "0" {
		t.Errorf("ls row: %q", lines[1])
	}
	r = cli(t, env, "", "ls", "--status", "failed,killed", "--since", "1h")
	wantExit(t, r, 0)
	if strings.Contains(r.stdout, id) {
		t.Errorf("ls --status failed lists a succeeded order:\n%s", r.stdout)
	}
	r = cli(t, env, "", "ls", "--since", "yesterday")
	if r.err == nil || !strings.Contains(r.err.Error(), "--since") {
		t.Errorf("ls --since yesterday: %v", r.err)
	}

	r = cli(t, env, "", "hosts")
	wantExit(t, r, 0)
	if !strings.Contains(r.stdout, "HOST") || !regexpLine(r.stdout, `^h1\s+yes\s.*\s0\s+\S+$`) {
		t.Errorf("hosts:\n%s", r.stdout)
	}
	r = cli(t, env, "", "hosts", "h1")
	wantExit(t, r, 0)
	if !strings.Contains(r.stdout, "Host:") || !strings.Contains(r.stdout, "h1") {
		t.Errorf("hosts h1:\n%s", r.stdout)
	}
	// A host with a live worker cannot be forgotten (api: TestForgetHost).
	r = cli(t, env, "", "hosts", "--forget", "h1")
	if r.err == nil || !strings.Contains(r.err.Error(), "has a live worker") || !strings.Contains(r.err.Error(), "(conflict)") {
		t.Errorf("hosts --forget h1: %v", r.err)
	}
	if r = cli(t, env, "", "hosts", "--forget"); r.err == nil || !strings.Contains(r.err.Error(), "--forget needs the host") {
		t.Errorf("hosts --forget: %v", r.err)
	}
	// A host without a worker, an order of it queued: forgotten with
	// --abandon only, which cancels the order.
	r = cli(t, env, "", "submit", "--host", "gone", "--", "true")
	wantExit(t, r, 0)
	gone := strings.TrimSpace(r.stdout)
	if r = cli(t, env, "", "hosts", "--abandon", "gone"); r.err == nil || !strings.Contains(r.err.Error(), "forget") {
		t.Errorf("hosts --abandon without --forget: %v", r.err)
	}
	// The refusal names the flag that abandons them, not the API's query,
	// and one order as one ("has 1 orders …: cancel them").
	if r = cli(t, env, "", "hosts", "--forget", "gone"); r.err == nil || !strings.Contains(r.err.Error(), "to abandon it with the host: orderly hosts --forget gone --abandon") ||
		!strings.Contains(r.err.Error(), "has 1 order queued or running: cancel it first") ||
		!strings.Contains(r.err.Error(), "(conflict)") {
		t.Errorf("hosts --forget gone, an order queued: %v", r.err)
	}
	r = cli(t, env, "", "hosts", "--forget", "gone", "--abandon")
	wantExit(t, r, 0)
	if r = cli(t, env, "", "get", gone); !strings.Contains(r.stdout, "canceled") {
		t.Errorf("the gone host's order after --abandon:\n%s", r.stdout)
	}

	// Cancel of a finished order is a conflict: exit 1 with the API's message.
	r = cli(t, env, "", "cancel", id)
	wantExit(t, r, 1)
	var ae *apiError
	if !errors.As(r.err, &ae) || ae.Status != http.StatusConflict || !strings.HasSuffix(r.err.Error(), "(conflict)") ||
		!strings.Contains(r.err.Error(), "already finished") {
		t.Errorf("cancel of a finished order: %v", r.err)
	}
	r = cli(t, env, "", "get", uuid.NewString())
	if r.err == nil || !strings.HasSuffix(r.err.Error(), "(not_found)") {
		t.Errorf("get of an unknown order: %v", r.err)
	}
	r = cli(t, env, "", "cancel", "--signal", "WINCH", id)
	if r.err == nil || !strings.Contains(r.err.Error(), "(invalid_request)") {
		t.Errorf("cancel --signal WINCH: %v", r.err)
	}

	// Cancel of a running order: logs -f sees it killed with SIGTERM.
	r = cli(t, env, "", "submit", "--host", "h1", "--", "sleep", "30")
	wantExit(t, r, 0)
	running := strings.TrimSpace(r.stdout)
	s.waitFor(uuid.MustParse(running), 20*time.Second, func(o api.Order) bool { return o.Status == "running" })
	var wg sync.WaitGroup
	var followed cliResult
	wg.Go(func() { followed = cli(t, env, "", "logs", "-f", running) })
	r = cli(t, env, "", "cancel", running)
	wantExit(t, r, 0)
	if !strings.Contains(r.stdout, "sent SIGTERM to order "+running) {
		t.Errorf("cancel of a running order: %q", r.stdout)
	}
	wg.Wait()
	wantExit(t, followed, 128+15)
	if !strings.Contains(followed.stderr, "killed with SIGTERM") {
		t.Errorf("logs -f of a killed order: stderr %q", followed.stderr)
	}

	// Cancel of a queued order (no worker for its host): canceled, exit 1 when followed.
	r = cli(t, env, "", "submit", "--host", "offline", "--", "true")
	wantExit(t, r, 0)
	queued := strings.TrimSpace(r.stdout)
	r = cli(t, env, "", "cancel", queued)
	wantExit(t, r, 0)
	if !strings.Contains(r.stdout, "canceled before it started") {
		t.Errorf("cancel of a queued order: %q", r.stdout)
	}
	r = cli(t, env, "", "logs", "-f", queued)
	wantExit(t, r, 1)
	if !strings.Contains(r.err.Error(), "canceled") {
		t.Errorf("logs -f of a canceled order: %v", r.err)
	}
}

// regexpLine reports whether a line of text matches pattern.
func regexpLine(text, pattern string) bool {
	return regexp.MustCompile("(?m)" + pattern).MatchString(text)
}

func TestCLIJSON(t *testing.T) {
	s := newStack(t, "h1")
	env := s.cliEnv()
	decode := func(t *testing.T, r cliResult, v any) {
		t.Helper()
		if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
			t.Fatalf("output is not JSON: %v\n%s", err, r.stdout)
		}
	}

	r := cli(t, env, "", "submit", "--host", "h1", "--json", "--", "true")
	wantExit(t, r, 0)
	var queued api.Order
	decode(t, r, &queued)
	if queued.ID == uuid.Nil || queued.Host != "h1" {
		t.Fatalf("submit --json: %+v", queued)
	}

	r = cli(t, env, "", "submit", "--host", "h1", "--wait", "--json", "--", "sh", "-c", "echo hi; exit 4")
	wantExit(t, r, 4)
	var done api.Order
	decode(t, r, &done)
	if done.Status != "failed" || done.Result == nil || *done.Result.ExitCode != 4 || done.Result.Stdout.Content != "hi\n" {
		t.Fatalf("submit --wait --json: %s", r.stdout)
	}

	r = cli(t, env, "", "get", "--json", done.ID.String())
	wantExit(t, r, 0)
	var got api.Order
	decode(t, r, &got)
	if got.ID != done.ID || got.Status != "failed" {
		t.Fatalf("get --json: %s", r.stdout)
	}

	for _, args := range [][]string{{"ls", "--json"}, {"ls", "--json", "--all", "--limit", "1"}} {
		r = cli(t, env, "", args...)
		wantExit(t, r, 0)
		var l api.OrderList
		decode(t, r, &l)
		if len(l.Orders) != 2 || l.Orders[0].ID != done.ID || l.Orders[1].ID != queued.ID {
			t.Fatalf("%v: %s", args, r.stdout)
		}
	}

	// A page size out of range is the client's error, not the server's default.
	for _, n := range []string{"0", "-1", "1001"} {
		r = cli(t, env, "", "ls", "--limit", n)
		wantExit(t, r, 1)
		if !strings.Contains(r.err.Error(), "--limit must be 1-1000") {
			t.Fatalf("ls --limit %s: %v", n, r.err)
		}
	}

	r = cli(t, env, "", "hosts", "--json")
	wantExit(t, r, 0)
	var hs struct {
		Hosts []api.Host `json:"hosts"`
	}
	decode(t, r, &hs)
	if len(hs.Hosts) != 1 || hs.Hosts[0].Host != "h1" || !hs.Hosts[0].Online {
		t.Fatalf("hosts --json: %s", r.stdout)
	}
}

func TestCLIConnection(t *testing.T) {
	s := newStack(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "admin.token"), []byte(s.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	url := "ORDERLY_URL=" + s.url
	for _, tc := range []struct {
		name   string
		env    []string
		args   []string
		errHas string // "" means success
	}{
		{name: "ORDERLY_TOKEN", env: []string{url, "ORDERLY_TOKEN=" + s.token}},
		{name: "--token over a bad ORDERLY_TOKEN", env: []string{url, "ORDERLY_TOKEN=nope"}, args: []string{"--token", s.token}},
		{name: "--url over ORDERLY_URL", env: []string{"ORDERLY_URL=http://127.0.0.1:1", "ORDERLY_TOKEN=" + s.token}, args: []string{"--url", s.url + "/"}},
		{name: "--data-dir token file", env: []string{url}, args: []string{"--data-dir", dir}},
		{name: "ORDERLY_DATA_DIR token file", env: []string{url, "ORDERLY_DATA_DIR=" + dir}},
		{name: "missing token", env: []string{url, "ORDERLY_DATA_DIR=" + empty}, errHas: "no API token: pass --token, set ORDERLY_TOKEN"},
		{name: "wrong token", env: []string{url, "ORDERLY_TOKEN=wrong"}, errHas: "(unauthenticated)"},
		{name: "API down", env: []string{"ORDERLY_URL=http://127.0.0.1:1", "ORDERLY_TOKEN=x"}, errHas: "cannot reach the orderly API at http://127.0.0.1:1"},
		{name: "bad URL", env: []string{"ORDERLY_URL=127.0.0.1:8080", "ORDERLY_TOKEN=x"}, errHas: "is not an http:// or https:// URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := cli(t, tc.env, "", append([]string{"hosts"}, tc.args...)...)
			if tc.errHas == "" {
				wantExit(t, r, 0)
				if !strings.HasPrefix(r.stdout, "HOST") {
					t.Fatalf("hosts: %q", r.stdout)
				}
				return
			}
			wantExit(t, r, 1)
			if !strings.Contains(r.err.Error(), tc.errHas) {
				t.Fatalf("error = %q, want it to contain %q", r.err, tc.errHas)
			}
		})
	}
	if r := cli(t, []string{url, "ORDERLY_DATA_DIR=" + empty}, ""); !strings.Contains(r.stdout, "submit") {
		t.Fatalf("orderly with no command does not list the client commands:\n%s", r.stdout)
	}
}

func TestCLIFanOut(t *testing.T) {
	s := newStack(t, "f1", "f2", "f3")
	env := s.cliEnv()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var hs struct {
			Hosts []struct{ Online bool } `json:"hosts"`
		}
		_, b := s.do("GET", "/v1/hosts", nil)
		_ = json.Unmarshal(b, &hs)
		online := 0
		for _, h := range hs.Hosts {
			if h.Online {
				online++
			}
		}
		if online == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("workers not online: %s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}

	r := cli(t, env, "", "submit", "--hosts", "f*", "--wait", "--", "echo", "hi")
	wantExit(t, r, 0)
	if r.stdout != "f1: hi\nf2: hi\nf3: hi\n" {
		t.Errorf("fan-out stdout = %q", r.stdout)
	}
	for _, h := range []string{"f1", "f2", "f3"} {
		if !strings.Contains(r.stderr, h+": succeeded (exit 0)\n") {
			t.Errorf("fan-out progress for %s missing:\n%s", h, r.stderr)
		}
	}

	r = cli(t, env, "", "submit", "--hosts", "f1,f2", "--wait", "--", "sh", "-c", "echo bad >&2; exit 3")
	wantExit(t, r, 1)
	if !strings.Contains(r.stderr, "f1: failed (exit 3)") || !strings.Contains(r.stderr, "f2: bad\n") ||
		!strings.Contains(r.err.Error(), "2 failed") {
		t.Errorf("failing fan-out: err %v\nstderr:\n%s", r.err, r.stderr)
	}
	// Of one host, said so ("1 hosts: 1 failed" before).
	r = cli(t, env, "", "submit", "--hosts", "f1", "--wait", "--", "sh", "-c", "exit 3")
	if wantExit(t, r, 1); !strings.Contains(r.err.Error(), "(1 host: 1 failed)") {
		t.Errorf("failing fan-out to one host: %v", r.err)
	}

	r = cli(t, env, "", "submit", "--hosts", "f1,f3", "--", "true")
	wantExit(t, r, 0)
	first, _, _ := strings.Cut(r.stdout, "\n")
	batch := strings.TrimPrefix(first, "batch ")
	if _, err := uuid.Parse(batch); err != nil || strings.Count(r.stdout, "\n") != 4 {
		t.Fatalf("fan-out without --wait:\n%s", r.stdout)
	}
	r = cli(t, env, "", "ls", "--batch", batch, "--json")
	wantExit(t, r, 0)
	var l api.OrderList
	if err := json.Unmarshal([]byte(r.stdout), &l); err != nil || len(l.Orders) != 2 {
		t.Fatalf("ls --batch: %v\n%s", err, r.stdout)
	}
}

// fakeOrderAPI serves the order endpoints the follower uses, for the
// failures a real API does not produce on demand: a connection dropped in
// the middle of the event stream, and an API without the events endpoint.
type fakeOrderAPI struct {
	t      *testing.T
	id     string
	events func(w http.ResponseWriter, r *http.Request, conn int)
	final  string // the finished order's JSON
	mu     sync.Mutex
	conns  int
	gets   int
}

func (f *fakeOrderAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer tok" {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":{"code":"unauthenticated","message":"bad token"}}`)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method == "POST" && r.URL.Path == "/v1/orders":
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, `{"id":%q,"host":"h1","status":"queued","command":"x","args":[]}`, f.id)
	case r.Method == "GET" && r.URL.Path == "/v1/orders/"+f.id+"/events":
		f.conns++
		f.events(w, r, f.conns)
	case r.Method == "GET" && r.URL.Path == "/v1/orders/"+f.id:
		f.gets++
		if f.gets < 3 {
			fmt.Fprintf(w, `{"id":%q,"host":"h1","status":"running","command":"x","args":[]}`, f.id)
			return
		}
		fmt.Fprint(w, f.final)
	default:
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"error":{"code":"not_found","message":"no such route"}}`)
	}
}

func TestCLIFollowEventStream(t *testing.T) {
	id := uuid.NewString()
	final := fmt.Sprintf(`{"id":%q,"host":"h1","status":"failed","command":"x","args":[],
		"result":{"exit_code":7,"signal":null,"duration_ms":5,"error":null,
		"stdout":{"content":"hello\n","encode":null,"bytes":6,"truncated":false},
		"stderr":{"content":%q,"encode":"base64","bytes":5,"truncated":false}}}`,
		id, base64.StdEncoding.EncodeToString([]byte("\xffoops")))
	event := func(w http.ResponseWriter, id int, name, data string) {
		fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", id, name, data)
	}
	streamed := func(t *testing.T) func(http.ResponseWriter, *http.Request, int) {
		return func(w http.ResponseWriter, r *http.Request, conn int) {
			w.Header().Set("Content-Type", "text/event-stream")
			switch conn {
			case 1:
				if r.Header.Get("Last-Event-ID") != "" {
					t.Errorf("first connection sent Last-Event-ID %q", r.Header.Get("Last-Event-ID"))
				}
				event(w, 0, "queued", `{"status":"queued"}`)
				fmt.Fprint(w, ": keep-alive\n\n")
				event(w, 1, "started", `{"status":"running"}`)
				event(w, 2, "stdout", `{"data":"hel","encode":null}`)
				fmt.Fprint(w, "id: 3\nevent: stdout\ndata: {\"data\":\"NOT DELIVERED\"") // cut mid-event
			case 2:
				if got := r.Header.Get("Last-Event-ID"); got != "2" {
					t.Errorf("reconnect sent Last-Event-ID %q, want 2", got)
				}
				event(w, 2, "stdout", `{"data":"hel","encode":null}`) // a replay it must skip
				event(w, 3, "stdout", `{"data":"lo\n","encode":null}`)
				event(w, 4, "stderr", fmt.Sprintf(`{"data":%q,"encode":"base64"}`, base64.StdEncoding.EncodeToString([]byte("\xffoops"))))
				// The API may reuse the last chunk's id for finished.
				event(w, 4, "finished", strings.ReplaceAll(final, "\n", ""))
			default:
				t.Errorf("connection %d after finished", conn)
			}
		}
	}
	for _, tc := range []struct {
		name   string
		events func(t *testing.T) func(http.ResponseWriter, *http.Request, int)
		polled bool
	}{
		{name: "reconnect with Last-Event-ID", events: streamed},
		{name: "no events endpoint", polled: true, events: func(*testing.T) func(http.ResponseWriter, *http.Request, int) {
			return func(w http.ResponseWriter, _ *http.Request, _ int) {
				w.WriteHeader(http.StatusNotFound)
				fmt.Fprint(w, `{"error":{"code":"not_found","message":"no such route"}}`)
			}
		}},
		{name: "events not acceptable", polled: true, events: func(*testing.T) func(http.ResponseWriter, *http.Request, int) {
			return func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(http.StatusNotAcceptable) }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := &fakeOrderAPI{t: t, id: id, final: final, events: tc.events(t)}
			srv := httptest.NewServer(fake)
			defer srv.Close()
			r := cli(t, []string{"ORDERLY_URL=" + srv.URL, "ORDERLY_TOKEN=tok"}, "", "submit", "--host", "h1", "--wait", "--", "x")
			wantExit(t, r, 7)
			if r.stdout != "hello\n" || r.stderr != "\xffoops" {
				t.Fatalf("stdout %q stderr %q", r.stdout, r.stderr)
			}
			if polled := fake.gets > 0; polled != tc.polled {
				t.Fatalf("polled = %v (%d GETs), want %v", polled, fake.gets, tc.polled)
			}
		})
	}
}

// TestCLILsAsksForNoOutputs: orderly ls prints a table without outputs,
// so it asks the API for none (outputs=none) and receives kilobytes for a
// page whose orders hold megabytes of output; ls --json prints the API's
// answer with the outputs, as it always has. A proxy in front of the API
// sees the requests and counts the bytes.
func TestCLILsAsksForNoOutputs(t *testing.T) {
	s := newStack(t, "h1")
	r := cli(t, s.cliEnv(), "", "submit", "--host", "h1", "--", "seq", "1", "300000") // 2 MB of output
	wantExit(t, r, 0)
	id := uuid.MustParse(strings.TrimSpace(r.stdout))
	s.waitFor(id, 30*time.Second, terminal)

	target, err := url.Parse(s.url)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		queries  []string
		received int64
	)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(resp *http.Response) error {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		mu.Lock()
		queries, received = append(queries, resp.Request.URL.RawQuery), received+int64(len(b))
		mu.Unlock()
		resp.Body = io.NopCloser(bytes.NewReader(b))
		return err
	}
	ps := httptest.NewServer(proxy)
	t.Cleanup(ps.Close)
	env := []string{"ORDERLY_URL=" + ps.URL, "ORDERLY_TOKEN=" + s.token}
	seen := func() ([]string, int64) {
		mu.Lock()
		defer mu.Unlock()
		q, n := queries, received
		queries, received = nil, 0
		return q, n
	}

	r = cli(t, env, "", "ls", "--host", "h1")
	wantExit(t, r, 0)
	if f := strings.Fields(r.stdout); len(f) < 12 || f[6] != id.String() || f[8] != "succeeded" {
		t.Fatalf("ls:\n%s", r.stdout)
	}
	q, n := seen()
	if len(q) != 1 || !strings.Contains(q[0], "outputs=none") || n > 8<<10 {
		t.Errorf("ls sent %q and received %d bytes, want outputs=none and a few kilobytes", q, n)
	}

	r = cli(t, env, "", "ls", "--host", "h1", "--json")
	wantExit(t, r, 0)
	var l api.OrderList
	if err := json.Unmarshal([]byte(r.stdout), &l); err != nil {
		t.Fatalf("ls --json: %v", err)
	}
	if len(l.Orders) != 1 || l.Orders[0].Result == nil || len(l.Orders[0].Result.Stdout.Content) != int(l.Orders[0].Result.Stdout.Bytes) {
		t.Fatalf("ls --json: %.500s", r.stdout)
	}
	if q, n := seen(); len(q) != 1 || strings.Contains(q[0], "outputs") || n < 1<<20 {
		t.Errorf("ls --json sent %q and received %d bytes, want the outputs", q, n)
	}
}

// TestCLIWaitFailureNamesTheOrder: when waiting for a submitted order
// fails (here the API refuses to show it), the order is recorded and
// runs, so submit --wait names it instead of leaving the user to submit
// it again to find out.
func TestCLIWaitFailureNamesTheOrder(t *testing.T) {
	id := uuid.NewString()
	refuse := func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"error":{"code":"forbidden","message":"not yours"}}`)
	}
	fake := &fakeOrderAPI{t: t, id: id, events: refuse}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	r := cli(t, []string{"ORDERLY_URL=" + srv.URL, "ORDERLY_TOKEN=tok"}, "", "submit", "--host", "h1", "--wait", "--", "x")
	wantExit(t, r, 1)
	if !strings.Contains(r.stderr, "order "+id+" was submitted") || !strings.Contains(r.err.Error(), "not yours") {
		t.Fatalf("stderr %q, err %v", r.stderr, r.err)
	}
}

// TestCLIFanOutWaitJSONKeepsRefusals: submit --hosts --wait --json prints
// the hosts the API refused with the finished orders; it printed the
// orders only, so a script reading the JSON never learned that a host
// got no order. (A fake API: the refusal is injected.)
func TestCLIFanOutWaitJSONKeepsRefusals(t *testing.T) {
	id, batch := uuid.NewString(), uuid.NewString()
	order := fmt.Sprintf(`{"id":%q,"batch_id":%q,"host":"h1","status":"succeeded","command":"x","args":[],
		"result":{"exit_code":0,"signal":null,"duration_ms":1,"error":null,
		"stdout":{"content":"","encode":null,"bytes":0,"truncated":false},"stderr":{"content":"","encode":null,"bytes":0,"truncated":false}}}`, id, batch)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == "POST" && r.URL.Path == "/v1/orders":
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprintf(w, `{"batch_id":%q,"counts":{"succeeded":1,"refused":1},"orders":[%s],
				"refused":[{"host":"h2","error":{"code":"forbidden","message":"not here"}}]}`, batch, order)
		case r.Method == "GET" && r.URL.Path == "/v1/orders/"+id:
			fmt.Fprint(w, order)
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":{"code":"not_found","message":"no such route"}}`)
		}
	}))
	defer srv.Close()
	r := cli(t, []string{"ORDERLY_URL=" + srv.URL, "ORDERLY_TOKEN=tok"}, "", "submit", "--hosts", "h1,h2", "--wait", "--json", "--", "x")
	wantExit(t, r, 1)
	var out struct {
		BatchID string            `json:"batch_id"`
		Orders  []json.RawMessage `json:"orders"`
		Refused []struct {
			Host  string `json:"host"`
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		} `json:"refused"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || out.BatchID != batch || len(out.Orders) != 1 ||
		len(out.Refused) != 1 || out.Refused[0].Host != "h2" || out.Refused[0].Error.Code != "forbidden" {
		t.Fatalf("--wait --json: %v\n%s", err, r.stdout)
	}
}

// TestCLISubmitRefusalNamesItsOrder: a submission answered 503 with the
// order it may have recorded (details.order_id: "look it up by id before
// submitting it again") names that order; the CLI printed the message
// alone, so the id to look up was lost. (A fake API: the failure is
// injected.)
func TestCLISubmitRefusalNamesItsOrder(t *testing.T) {
	id := uuid.NewString()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, `{"error":{"code":"unavailable","message":"database unavailable: the order may have been recorded; look it up by id before submitting it again","details":{"order_id":%q}}}`, id)
	}))
	defer srv.Close()
	r := cli(t, []string{"ORDERLY_URL=" + srv.URL, "ORDERLY_TOKEN=tok"}, "", "submit", "--host", "h1", "--", "x")
	wantExit(t, r, 1)
	if r.err == nil || !strings.Contains(r.err.Error(), "(unavailable); order "+id) {
		t.Fatalf("error %v", r.err)
	}
}

// TestCLISubmitRefusesAnEnvNameTwice: --env A=1 --env A=2 sent A=2 alone
// (the flags fill a map), where the API refuses a body that names A twice;
// the CLI refuses it too, naming the variable, before sending anything.
func TestCLISubmitRefusesAnEnvNameTwice(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the CLI sent %s %s", r.Method, r.URL)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer srv.Close()
	env := []string{"ORDERLY_URL=" + srv.URL, "ORDERLY_TOKEN=tok", "A=local"}
	for _, flags := range [][]string{{"--env", "A=1", "--env", "A=2"}, {"-e", "A=1", "-e", "A"}, {"-e", "A=1", "-e", "A=1"}} {
		args := append(append([]string{"submit", "--host", "h1"}, flags...), "--", "true")
		r := cli(t, env, "", args...)
		wantExit(t, r, 1)
		if !strings.Contains(r.err.Error(), "--env A is given twice") {
			t.Errorf("%v: %v", flags, r.err)
		}
	}
}

// TestCLICancelSaysWhenNoWorkerServesTheHost: the cancel of a running
// order only wakes its host's worker. Of an order left running by a
// worker that died (its row set so here, as the dead worker left it),
// `orderly cancel` said "sent SIGTERM" though nothing sends it; the API's
// answer now says whether the host is online (cancel.host_online), and
// the CLI says what happened and what to do when it is not.
func TestCLICancelSaysWhenNoWorkerServesTheHost(t *testing.T) {
	s := newStack(t, "h1")
	env := s.cliEnv()

	r := cli(t, env, "", "submit", "--host", "h1", "--", "sleep", "30")
	wantExit(t, r, 0)
	live := uuid.MustParse(strings.TrimSpace(r.stdout))
	s.waitFor(live, 20*time.Second, func(o api.Order) bool { return o.Status == "running" })
	r = cli(t, env, "", "cancel", "--json", live.String())
	wantExit(t, r, 0)
	if !strings.Contains(r.stdout, `"host_online": true`) {
		t.Errorf("cancel --json of an order its worker runs:\n%s", r.stdout)
	}

	r = cli(t, env, "", "submit", "--host", "web-9", "--", "sleep", "30")
	wantExit(t, r, 0)
	orphan := uuid.MustParse(strings.TrimSpace(r.stdout))
	if _, err := s.b.pool.Exec(t.Context(), `UPDATE orders SET status = 'running', attempt = 1, started_at = now(), worker = 'web-9/dead'
		WHERE id = $1 AND status = 'queued'`, orphan); err != nil {
		t.Fatal(err)
	}
	r = cli(t, env, "", "cancel", orphan.String())
	wantExit(t, r, 0)
	want := "cancel of order " + orphan.String() + " recorded (SIGTERM), but no worker serves web-9 now: nothing signals the order until a worker for web-9 starts and settles it\n" +
		"if web-9 is gone for good: orderly hosts --forget web-9 --abandon\n"
	if r.stdout != want {
		t.Errorf("cancel of an order no worker runs:\n%s\nwant\n%s", r.stdout, want)
	}
	r = cli(t, env, "", "get", "--json", orphan.String())
	wantExit(t, r, 0)
	if !strings.Contains(r.stdout, `"actor": "admin"`) || strings.Contains(r.stdout, "host_online") {
		t.Errorf("get --json: the cancel without host_online (an answer of the cancel only):\n%s", r.stdout)
	}
}

// TestCLISubmitTimeoutAboveTheMaximumNamesTheFlag: the API's refusal of a
// timeout above limits.max_timeout ("timeout_seconds is above the maximum
// of 86400") named its field, not the flag the user gave, and the maximum
// in seconds; the CLI says it as --timeout and a duration.
func TestCLISubmitTimeoutAboveTheMaximumNamesTheFlag(t *testing.T) {
	s := newStack(t, "h1")
	r := cli(t, s.cliEnv(), "", "submit", "--host", "h1", "--timeout", "48h", "--", "true")
	wantExit(t, r, 1)
	if want := "--timeout 48h0m0s is above the server's maximum of 24h0m0s (unprocessable)"; r.err == nil || r.err.Error() != want {
		t.Fatalf("error %v, want %q", r.err, want)
	}
}

// TestCLISubmitWaitSaysWhenNoWorkerServesTheHost: an order for a host no
// worker serves (a typo, a worker not started) is accepted and waits;
// `submit --wait` waited in silence until Ctrl-C. After a moment queued it
// now says the host has no worker online; an order its worker runs gets
// no such note.
func TestCLISubmitWaitSaysWhenNoWorkerServesTheHost(t *testing.T) {
	s := newStack(t, "h1")
	defer func(d time.Duration) { noWorkerCheckAfter = d }(noWorkerCheckAfter)
	noWorkerCheckAfter = 300 * time.Millisecond

	stderr, err := waitForNote(t, []string{"orderly", "submit", "--host", "web-9", "--wait", "--", "true"}, s.cliEnv(),
		"orderly: host web-9 has no worker online (never seen): the order waits until one starts; Ctrl-C stops waiting")
	if err == nil {
		t.Fatalf("submit --wait for a host without a worker ended:\n%s", stderr)
	}

	r := cli(t, s.cliEnv(), "", "submit", "--host", "h1", "--wait", "--", "sh", "-c", "sleep 1; echo done")
	wantExit(t, r, 0)
	if r.stdout != "done\n" || strings.Contains(r.stderr, "no worker online") {
		t.Errorf("an order its worker runs: stdout %q, stderr %q", r.stdout, r.stderr)
	}
}

// TestCLILogsFollowSaysWhenNoWorkerServesTheHost: `logs -f`, which
// re-attaches to an order whose `submit --wait` was stopped, waited in
// silence for an order queued on a host no worker serves, where the
// submit's wait had said why after two seconds. It says it now, as the
// submit does.
func TestCLILogsFollowSaysWhenNoWorkerServesTheHost(t *testing.T) {
	s := newStack(t, "h1")
	defer func(d time.Duration) { noWorkerCheckAfter = d }(noWorkerCheckAfter)
	noWorkerCheckAfter = 300 * time.Millisecond

	r := cli(t, s.cliEnv(), "", "submit", "--host", "web-9", "--", "true")
	wantExit(t, r, 0)
	id := strings.TrimSpace(r.stdout)
	stderr, err := waitForNote(t, []string{"orderly", "logs", "-f", id}, s.cliEnv(),
		"orderly: host web-9 has no worker online (never seen): the order waits until one starts; Ctrl-C stops waiting")
	if err == nil {
		t.Fatalf("logs -f of an order on a host without a worker ended:\n%s", stderr)
	}
	if strings.Count(stderr, "no worker online") != 1 {
		t.Errorf("want the note once:\n%s", stderr)
	}
}

// TestCLIFanOutWaitSaysWhichHostsHaveNoWorker: a fan-out --wait with a
// host no worker serves showed "web-9: queued" and waited in silence;
// after a moment it now names that host, once, and not the host whose
// worker ran its order.
func TestCLIFanOutWaitSaysWhichHostsHaveNoWorker(t *testing.T) {
	s := newStack(t, "h1")
	defer func(d time.Duration) { noWorkerCheckAfter = d }(noWorkerCheckAfter)
	noWorkerCheckAfter = 300 * time.Millisecond

	stderr, err := waitForNote(t, []string{"orderly", "submit", "--hosts", "h1,web-9", "--wait", "--", "true"}, s.cliEnv(),
		"web-9: no worker online (never seen): its order waits until one starts\n")
	if err == nil {
		t.Fatalf("submit --hosts --wait with a host without a worker ended:\n%s", stderr)
	}
	if strings.Contains(stderr, "h1: no worker online") || strings.Count(stderr, "no worker online") != 1 {
		t.Errorf("want web-9 alone named, once:\n%s", stderr)
	}
}

// waitForNote runs the CLI with args and env, a wait for an order that
// stays queued, until its stderr shows note (at most a minute: a loaded
// machine delays the check, not the note), then stops it as Ctrl-C does,
// and returns its stderr and its error. A note that never comes fails the
// test.
func waitForNote(t *testing.T, args, env []string, note string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out, errb testenv.LogBuffer
	ended := make(chan error, 1)
	go func() { ended <- run(ctx, args, env, strings.NewReader(""), &out, &errb) }()
	deadline := time.After(time.Minute)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(errb.String(), note) {
		select {
		case err := <-ended:
			t.Fatalf("%q ended without the note: %v\n%s", args, err, errb.String())
		case <-deadline:
			t.Fatalf("%q: no note within a minute:\n%s", args, errb.String())
		case <-tick.C:
		}
	}
	cancel()
	select {
	case err := <-ended:
		return errb.String(), err
	case <-time.After(30 * time.Second):
		t.Fatalf("%q did not stop on Ctrl-C", args)
		return "", nil
	}
}
