package api

import (
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestNetHTTPRefusalsInEnvelope: a header over MaxHeaderBytes and a
// request net/http cannot parse are answered before any handler runs; on
// the wrapped listener they carry the JSON error envelope (431
// header_too_large, 400 invalid_request) instead of net/http's text.
func TestNetHTTPRefusalsInEnvelope(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}), MaxHeaderBytes: 1 << 10, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ErrorEnvelopeListener(ln)) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Error(err)
		}
	})
	url := "http://" + ln.Addr().String() + "/"

	req, _ := http.NewRequestWithContext(t.Context(), "GET", url, nil)
	req.Header.Set("X-Big", strings.Repeat("x", 64<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	wantEnvelope(t, resp, http.StatusRequestHeaderFieldsTooLarge, "header_too_large")

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n")
	b, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(b), "HTTP/1.1 400 Bad Request\r\n") || !strings.Contains(string(b), `"code":"invalid_request"`) ||
		!strings.Contains(string(b), "Content-Type: application/json\r\n") {
		t.Fatalf("malformed request answered %q", b)
	}

	// net/http's other refusals before any handler: an unsupported
	// Transfer-Encoding (501), protocol version (505) and Expect (417,
	// with no body) are the client's malformed request, 400 in the
	// envelope.
	for _, req := range []string{
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n{}",
		"POST / HTTP/1.0\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n{}",
	} {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, req)
		b, _ := io.ReadAll(c)
		c.Close()
		if !strings.HasPrefix(string(b), "HTTP/1.1 400 Bad Request\r\n") || !strings.Contains(string(b), `"code":"invalid_request"`) ||
			!strings.Contains(string(b), "Content-Type: application/json\r\n") {
			t.Errorf("%q answered %q", req, b)
		}
	}

	// Ordinary answers pass through untouched.
	resp, err = http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok" {
		t.Fatalf("plain request: %d %q", resp.StatusCode, b)
	}
}

func wantEnvelope(t *testing.T, resp *http.Response, status int, code string) {
	t.Helper()
	defer resp.Body.Close()
	var e ErrorBody
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status || resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal(b, &e) != nil ||
		string(e.Error.Code) != code || e.Error.Message == "" {
		t.Fatalf("got %d %q %s, want %d with code %s", resp.StatusCode, resp.Header.Get("Content-Type"), b, status, code)
	}
}

// TestHandlerAnswersAreNotRewritten: only net/http's own refusals are
// rewritten, never a handler's answer that happens to end its headers as
// they do. A handler's 400 whose type net/http sniffed (text/plain;
// charset=utf-8) on a connection that closes ends its headers with the
// same Content-Type and Connection lines, and went out as orderly's
// envelope, its text made the message: a compat surface's plain-text
// 400 would have changed format whenever the client sent Connection:
// close.
func TestHandlerAnswersAreNotRewritten(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const text = "the environment name \"A=B\" is not valid\n"
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest) // the type is sniffed: text/plain; charset=utf-8
		io.WriteString(w, text)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ErrorEnvelopeListener(ln)) }()
	t.Cleanup(func() { _ = srv.Close() })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
	b, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(b), "HTTP/1.1 400 Bad Request\r\n") || !strings.HasSuffix(string(b), "\r\n\r\n"+text) ||
		!strings.Contains(string(b), "Content-Type: text/plain; charset=utf-8\r\n") {
		t.Fatalf("a handler's 400 went out as %q", b)
	}
}

// TestPlainHTTPToTheTLSPortInEnvelope: plain HTTP sent to the API's TLS
// port (an http:// URL of an HTTPS API) was answered in net/http's own
// text, "Client sent an HTTP request to an HTTPS server.", with no error
// code (the CLI showed http_400). It is written under the TLS layer, so
// the listener sees it: it goes out in the envelope, 400
// invalid_request, saying to use https://. The TLS port still serves
// TLS.
func TestPlainHTTPToTheTLSPortInEnvelope(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	srv.Listener = ErrorEnvelopeListener(srv.Listener)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()

	resp, err := http.Get("http://" + srv.Listener.Addr().String() + "/v1/hosts")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var e ErrorBody
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Content-Type") != "application/json" ||
		json.Unmarshal(b, &e) != nil || e.Error.Code != "invalid_request" || !strings.Contains(e.Error.Message, "https://") {
		t.Fatalf("plain HTTP to the TLS port answered %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}

	resp, err = srv.Client().Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok" {
		t.Fatalf("over TLS: %d %q", resp.StatusCode, b)
	}
}
