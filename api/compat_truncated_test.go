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
