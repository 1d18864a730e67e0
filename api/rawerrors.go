package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"

	"github.com/orderly-run/orderly/internal/order"
)

// MaxHeaderBytes is the limit the API's http.Server puts on a request line
// and its headers together (http.Server.MaxHeaderBytes), so on its query
// string too: over it, net/http answers 431 itself, on every route, and
// openapi.yaml lists that answer on each operation.
const MaxHeaderBytes = 64 << 10

// netHTTPErrorHeaders are the headers net/http writes with the refusals it
// sends on its own, before any handler runs (server.go, conn.serve).
const netHTTPErrorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

// ErrorEnvelopeListener wraps ln so that the refusals net/http writes
// itself (431 for headers over http.Server.MaxHeaderBytes, 400 for a
// request it cannot parse, and envelopeFor's others) go out in the JSON
// error envelope, like every other refusal. net/http has no hook for them: it formats each one into a
// single Write on the connection, which is recognized here by its exact
// shape and replaced. Under TLS the connection carries ciphertext, so
// nothing matches and net/http's text goes out unchanged, but for the
// answer to plain HTTP sent to the TLS port, which net/http writes in
// plain text under the TLS layer (httpToHTTPS).
func ErrorEnvelopeListener(ln net.Listener) net.Listener { return envelopeListener{ln} }

type envelopeListener struct{ net.Listener }

func (l envelopeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &envelopeConn{Conn: c}, nil
}

// envelopeConn is a connection whose net/http refusals are rewritten.
type envelopeConn struct{ net.Conn }

func (c *envelopeConn) Write(b []byte) (int, error) {
	if out := envelopeFor(b); out != nil {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// CloseWrite keeps net/http's half-close after a 431 (closeWriteAndWait),
// which it only does for connections that have one.
func (c *envelopeConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// ReadFrom keeps the TCP connection's sendfile/splice path.
func (c *envelopeConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.Conn, r)
}

// envelopeFor returns the JSON version of one of net/http's own refusals,
// or nil when b is anything else. 431 stays 431 (header_too_large); the
// others are the client's malformed request, 400 invalid_request: net/http
// answers an unsupported Transfer-Encoding 501 and a protocol version
// other than 1.x 505, which count as the server's own failures wherever
// 5xx are watched, and an Expect other than 100-continue 417 with no body
// at all (RFC 9110 lets a server answer that one 417 or any 4xx).
func envelopeFor(b []byte) []byte {
	if string(b) == httpToHTTPS {
		return envelope(http.StatusBadRequest, order.CodeInvalid,
			"this port speaks HTTPS: send the request over TLS (https:// in the URL)")
	}
	if expectationFailed(b) {
		return envelope(http.StatusBadRequest, order.CodeInvalid, "Expect: only 100-continue is supported")
	}
	const proto = "HTTP/1.1 "
	head, text, ok := bytes.Cut(b, []byte(netHTTPErrorHeaders))
	// net/http's own refusal has these two headers right after its status
	// line; a handler's answer has a Date before them, and may end its
	// headers the same way (a sniffed text/plain, a closing connection).
	if !ok || !bytes.HasPrefix(head, []byte(proto)) || len(head) < len(proto)+3 || bytes.Contains(head, []byte("\r\n")) {
		return nil
	}
	status, err := strconv.Atoi(string(head[len(proto) : len(proto)+3]))
	if err != nil {
		return nil
	}
	switch status {
	case http.StatusRequestHeaderFieldsTooLarge:
		return envelope(status, order.CodeHeaderTooLarge, string(text))
	case http.StatusBadRequest:
		return envelope(status, order.CodeInvalid, string(text))
	case http.StatusNotImplemented:
		return envelope(http.StatusBadRequest, order.CodeInvalid, "unsupported Transfer-Encoding: send the body as is or chunked")
	case http.StatusHTTPVersionNotSupported:
		return envelope(http.StatusBadRequest, order.CodeInvalid, "unsupported protocol version: send HTTP/1.1")
	}
	return nil
}

// httpToHTTPS is net/http's answer to a request in plain HTTP on its TLS
// port (server.go, conn.serve), written on the connection under the TLS
// layer before any handshake. It was the one refusal of an HTTPS API
// outside the envelope: the CLI given an http:// URL of it reported
// "answered 400 Bad Request: Client sent an HTTP request to an HTTPS
// server. (http_400)", with no stable code (decisions.md, hJ22).
const httpToHTTPS = "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"

// expectationFailed reports whether b is net/http's answer to an Expect
// header other than 100-continue (response.sendExpectationFailed): a
// status line and headers with no body, written before any handler runs.
func expectationFailed(b []byte) bool {
	return (bytes.HasPrefix(b, []byte("HTTP/1.1 417 Expectation Failed\r\n")) || bytes.HasPrefix(b, []byte("HTTP/1.0 417 Expectation Failed\r\n"))) &&
		bytes.HasSuffix(b, []byte("\r\n\r\n")) && bytes.Contains(b, []byte("\r\nContent-Length: 0\r\n"))
}

// envelope is a whole HTTP/1.1 answer with status and the error envelope,
// after which the connection closes.
func envelope(status int, code order.Code, message string) []byte {
	body, err := json.Marshal(ErrorBody{Error: ErrorDetail{Code: code, Message: message}})
	if err != nil {
		return nil
	}
	body = append(body, '\n')
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		status, http.StatusText(status), len(body), body)
}
