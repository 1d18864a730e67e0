package api_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sendCutShort sends a POST to path on the server at url whose chunked
// body stops after its one chunk: no last chunk, and the client closes
// its side, as a client that dies or gives up midway does. It returns
// the answer's status and body.
func sendCutShort(t *testing.T, url, method, path, auth, body string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	head := method + " " + path + " HTTP/1.1\r\nHost: orderly\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
	if auth != "" {
		head += "Authorization: Bearer " + auth + "\r\n"
	}
	if _, err := fmt.Fprintf(conn, "%s\r\n%x\r\n%s\r\n", head, len(body), body); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s cut short: no answer: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestCompatBodyCutShortIs400: a compat request whose body stops before
// its end (a chunked body without its last chunk, the client's side
// closed) is refused 400 in its surface's own words, and runs nothing.
// Vigrid's kill took the part it had read for the whole body, then failed
// its read of the queue on the request's context, which net/http had
// ended with the client's side: 500 "Internal server error". The other
// surfaces answered 413 "too large" for a body of a few bytes, which
// sends a client to shrink a body that was never the matter.
func TestCompatBodyCutShortIs400(t *testing.T) {
	hx := newHTTPExecSurface(t, envOptions{})
	e := hx.apiEnv
	vigridURL := startVigrid(t, e)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Hello.md"), []byte(stage0Runbook("Hello", "{}", "", "echo hello")), 0o644); err != nil {
		t.Fatal(err)
	}
	s0, token := startStage0(t, e, dir)
	before := countOrders(t, e)
	for _, c := range []struct {
		name, url, method, path, auth, body string
		want                                string
	}{
		{"httpexec", hx.url, "POST", "/echo", "", `{"args":["x"]}`, "<title>400 Bad Request</title>"},
		{"vigrid execute", vigridURL, "POST", "/api/v1/execute", e.tokens["alice"], `{"command":"echo","arguments":["x"]}`,
			`{"message":"Invalid JSON body","status":"error"}`},
		{"vigrid kill", vigridURL, "POST", "/api/v1/kill", e.tokens["alice"], `{}`, `{"message":"Invalid JSON body","status":"error"}`},
		{"stage0 execute", s0, "POST", "/api/runbooks/Hello.md/execute", token, `{"env_vars":{}}`, `"error":"Invalid JSON body"`},
		{"stage0 validate", s0, "PATCH", "/api/runbooks/Hello.md/validate", token, `{"env_vars":{}}`, `"error":"Invalid JSON body"`},
		{"stage0 dev-login", s0, "POST", "/dev-login", "", `{"subject":"dev"}`, `"error":"Invalid JSON body"`},
		// The native API's answer, which the surfaces now match.
		{"native submit", vigridURL, "POST", "/v1/orders", e.tokens["alice"], `{"host":"h1","command":"echo"}`, `"code":"invalid_request"`},
	} {
		status, body := sendCutShort(t, c.url, c.method, c.path, c.auth, c.body)
		if status != http.StatusBadRequest || !strings.Contains(body, c.want) {
			t.Errorf("%s, its body cut short: %d %.200s, want 400 with %s", c.name, status, body, c.want)
		}
	}
	if after := countOrders(t, e); after != before {
		t.Errorf("%d orders recorded from bodies cut short", after-before)
	}
}

// sendHalfClosed sends a whole request to path on the server at url and
// then shuts down the client's writing half, as `nc -N` does, and returns
// the answer's status and body.
func sendHalfClosed(t *testing.T, url, method, path, auth, body string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: orderly\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", method, path, len(body))
	if auth != "" {
		req += "Authorization: Bearer " + auth + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"+body); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s half closed: no answer: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHalfClosedClientIsNot500: a client that sends its whole request
// and then shuts down its writing half is still there to read the
// answer, but net/http ends the request's context at that end of input.
// Reads of PostgreSQL that met the ended context were answered 500
// (native "internal error", Vigrid's "Internal server error", stage0's
// "A processing error occurred"); now 400 with details.reason
// client_closed, in each surface's own words; and /readyz, whose checks
// ran on that context, said PostgreSQL and NATS were down (503) while
// both were up. Whether a request's work
// meets the ended context is a race with the handler, so each request is
// sent a few times: none may be a 5xx, and the cut must be met at least
// once for the test to say anything.
func TestHalfClosedClientIsNot500(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"h1"}})
	vigridURL := startVigrid(t, e)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Hello.md"), []byte(stage0Runbook("Hello", "{}", "", "echo hello")), 0o644); err != nil {
		t.Fatal(err)
	}
	s0, token := startStage0(t, e, dir)
	o := e.submit("alice", map[string]any{"host": "offline", "command": "true"}, "", http.StatusAccepted)
	cut := 0
	for _, c := range []struct {
		url, method, path, auth, body string
		want                          string // in the answer of a cut request
	}{
		{vigridURL, "GET", "/v1/orders", e.tokens["alice"], "", `"reason":"client_closed"`},
		{vigridURL, "GET", "/v1/orders/" + o.ID.String(), e.tokens["alice"], "", `"reason":"client_closed"`},
		{vigridURL, "GET", "/v1/hosts/h1", e.tokens["alice"], "", `"reason":"client_closed"`},
		{vigridURL, "POST", "/v1/orders/" + o.ID.String() + "/cancel", e.tokens["alice"], "{}", `"reason":"client_closed"`},
		{vigridURL, "GET", "/api/v1/queue", e.tokens["alice"], "", `"status":"error"`},
		{vigridURL, "GET", "/api/v1/status", e.tokens["alice"], "", `"status":"error"`},
		{s0, "GET", "/api/runbooks/Hello.md", token, "", `"error":"the request was cut short`},
		// A readiness probe's checks do not run on the request's context:
		// it was 503 with PostgreSQL and NATS both up.
		{vigridURL, "GET", "/readyz", "", "", `"status":"ready"`},
	} {
		for range 3 {
			status, body := sendHalfClosed(t, c.url, c.method, c.path, c.auth, c.body)
			switch {
			case status >= 500:
				t.Errorf("%s %s half closed: %d %.200s, want no 5xx", c.method, c.path, status, body)
			case status == http.StatusBadRequest && strings.Contains(body, "cut short"):
				cut++
				if !strings.Contains(body, c.want) {
					t.Errorf("%s %s half closed: %.200s, want %s", c.method, c.path, body, c.want)
				}
			case status >= 400:
				t.Errorf("%s %s half closed: %d %.200s", c.method, c.path, status, body)
			}
		}
	}
	if cut == 0 {
		t.Error("no request met the client's closed half: the test proved nothing")
	}
	t.Logf("%d of 24 requests cut short", cut)
}
