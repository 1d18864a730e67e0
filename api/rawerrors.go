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

// ErrorEnvelopeListener wraps ln so that the plain-text refusals net/http
// writes itself (431 for headers over http.Server.MaxHeaderBytes, 400 for
// a request it cannot parse) go out in the JSON error envelope, like every
// other refusal. net/http has no hook for them: it formats each one into a
// single Write on the connection, which is recognized here by its exact
// shape and replaced. Under TLS the connection carries ciphertext, so
// nothing matches and net/http's text goes out unchanged.
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

// envelopeFor returns the JSON version of one of net/http's own 400 or 431
// answers, or nil when b is anything else.
func envelopeFor(b []byte) []byte {
	const proto = "HTTP/1.1 "
	head, text, ok := bytes.Cut(b, []byte(netHTTPErrorHeaders))
	if !ok || !bytes.HasPrefix(head, []byte(proto)) || len(head) < len(proto)+3 {
		return nil
	}
	status, err := strconv.Atoi(string(head[len(proto) : len(proto)+3]))
	if err != nil {
		return nil
	}
	var code order.Code
	switch status {
	case http.StatusRequestHeaderFieldsTooLarge:
		code = order.CodeHeaderTooLarge
	case http.StatusBadRequest:
		code = order.CodeInvalid
	default:
		return nil
	}
	body, err := json.Marshal(ErrorBody{Error: ErrorDetail{Code: code, Message: string(text)}})
	if err != nil {
		return nil
	}
	body = append(body, '\n')
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		status, http.StatusText(status), len(body), body)
}
