package testenv

import (
	"io"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/queue"
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
	link := &queue.ConnLink{}
	return []nats.Option{
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err == nil {
				return // closed by its owner
			}
			logger.Warn("nats disconnected", "error", err, "url", link.Dropped(), "client_id", clientID(nc))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			url, down := link.Back(nc)
			logger.Info("nats reconnected", "url", url, "client_id", clientID(nc), "down", down)
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
