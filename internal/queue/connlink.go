package queue

import (
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/config"
)

// ConnLink remembers what a NATS connection's disconnect and reconnect
// log lines name (orderly's processes and the tests' own connections): the server it was connected to and when it dropped.
// nats.go says neither once the connection is down (ConnectedUrlRedacted
// is "" while it reconnects), and a reconnect line that named no server
// nor how long the connection was away told an operator nothing of which
// node of a cluster went, or whether the outage was a blink or minutes.
type ConnLink struct {
	server atomic.Pointer[string] // the server's URL, without credentials (serverURL)
	down   atomic.Int64           // when the connection last dropped (UnixNano); 0: never
}

// Connected records nc's server: after the first connection and each
// reconnect.
func (l *ConnLink) Connected(nc *nats.Conn) {
	u := serverURL(nc)
	l.server.Store(&u)
}

// serverURL is the URL of the server nc is connected to with its
// secrets hidden (config.RedactNATS); "" while nc is not connected.
// nats.url may carry the connection's token (nats://TOKEN@host), which
// nats.go's ConnectedUrlRedacted keeps as it is (it hides a password
// only): every line that named the server printed the token
// (TestServerNamedWithoutTheURLsCredentials).
func serverURL(nc *nats.Conn) string {
	return config.RedactNATS(nc.ConnectedUrl())
}

// Dropped records that the connection dropped now and returns the
// server it was connected to ("" before it ever connected).
func (l *ConnLink) Dropped() string {
	l.down.Store(time.Now().UnixNano())
	if u := l.server.Load(); u != nil {
		return *u
	}
	return ""
}

// Back records nc's new server and returns it with how long the
// connection was down (0 when no drop was seen).
func (l *ConnLink) Back(nc *nats.Conn) (server string, down time.Duration) {
	l.Connected(nc)
	if d := l.down.Load(); d != 0 {
		down = time.Since(time.Unix(0, d)).Round(time.Millisecond)
	}
	return *l.server.Load(), down
}
