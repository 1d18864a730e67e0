package testenv

import (
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// NATSEvents returns options that log a test's NATS connection's
// disconnects, reconnects and asynchronous errors to t's output, named
// name: a test that restarts nats-server and then waits says, when it
// fails, whether each of its connections came back and when. Without
// them nats.go prints its asynchronous errors (a write on a connection
// the server closed) on stderr, far from the test and with no name.
func NATSEvents(t testing.TB, name string) []nats.Option {
	// nats.go runs these callbacks on a goroutine of its own, which
	// Close does not wait for: one may come after the test ended, when a
	// write to its output panics. The writer stops at the test's
	// cleanup, which waits for a write under way.
	out := &endingWriter{w: t.Output()}
	t.Cleanup(out.end)
	logger := LoggerTo(out).With("nats_conn", name)
	var down atomic.Int64 // when the connection last dropped (UnixNano)
	return []nats.Option{
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err == nil {
				return // closed by its owner
			}
			down.Store(time.Now().UnixNano())
			logger.Warn("nats disconnected", "error", err, "client_id", clientID(nc))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("nats reconnected", "url", nc.ConnectedUrlRedacted(), "client_id", clientID(nc),
				"down", time.Since(time.Unix(0, down.Load())).Round(time.Millisecond))
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			logger.Warn("nats error", "subject", subject, "error", err, "client_id", clientID(nc))
		}),
	}
}

// clientID is nc's id on its server (the server's logs and
// DisconnectClientByID name it), 0 while it has none.
func clientID(nc *nats.Conn) uint64 {
	id, _ := nc.GetClientID()
	return id
}

// endingWriter writes to w until end is called, and nothing after.
type endingWriter struct {
	mu    sync.Mutex
	w     io.Writer
	ended bool
}

func (e *endingWriter) Write(p []byte) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ended {
		return len(p), nil
	}
	return e.w.Write(p)
}

func (e *endingWriter) end() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ended = true
}
