package api_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestOversizedBodyRefusedUnread: a request whose Content-Length is over
// http.max_body_bytes is answered 413 before any of its body is read, so a
// client that sent Expect: 100-continue is told not to send it (it never
// sees "100 Continue"), and one that did not is not kept waiting while
// the server reads a mebibyte it throws away. Native routes and the
// httpexec surface alike; nothing is recorded.
func TestOversizedBodyRefusedUnread(t *testing.T) {
	hx := newHTTPExecSurface(t, envOptions{})
	u, err := url.Parse(hx.url)
	if err != nil {
		t.Fatal(err)
	}
	before := countOrders(t, hx.apiEnv)
	for _, c := range []struct{ path, expect, wantCode string }{
		{"/v1/orders", "Expect: 100-continue\r\n", `"code":"too_large"`},
		{"/v1/orders", "", `"code":"too_large"`},
		{"/v1/orders/" + "01a23c5f-5371-79c1-a381-3b6e61277141" + "/cancel", "Expect: 100-continue\r\n", `"code":"too_large"`},
		{"/echo", "Expect: 100-continue\r\n", ""}, // httpexec: Quart's page
	} {
		conn, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		// Closed on every path: the server would wait for the body, and
		// the test server's Close for it.
		t.Cleanup(func() { conn.Close() })
		// The headers only: the 100 MB are never sent.
		_, err = io.WriteString(conn, "POST "+c.path+" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+hx.tokens["alice"]+
			"\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n"+c.expect+"\r\n")
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Errorf("POST %s %q: no answer before the body: %v", c.path, c.expect, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), c.wantCode) {
			t.Errorf("POST %s %q: %d %s, want 413 %s", c.path, c.expect, resp.StatusCode, b, c.wantCode)
		}
	}
	if after := countOrders(t, hx.apiEnv); after != before {
		t.Errorf("%d orders recorded by refused requests", after-before)
	}
}

// countOrders counts e's orders.
func countOrders(t *testing.T, e *apiEnv) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM orders`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
