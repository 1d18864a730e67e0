package api

import (
	"strconv"
	"sync"

	"github.com/orderly-run/orderly/internal/order"
)

// streamCounts counts each principal's open event streams and waits: the
// requests that stay open while an order runs, each holding a goroutine
// and, for a stream, a consumer on the NATS server. The request rate
// limits bound how fast they open, not how many stay open: an order that
// runs for hours keeps its followers for hours. In memory, per API
// process, like the rate limits.
type streamCounts struct {
	mu   sync.Mutex
	open map[string]int
}

// take counts one more open stream of principal unless it holds limit
// already; release gives it back (call it once).
func (c *streamCounts) take(principal string, limit int) (release func(), ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[principal] >= limit {
		return nil, false
	}
	if c.open == nil {
		c.open = map[string]int{}
	}
	c.open[principal]++
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.open[principal]--; c.open[principal] <= 0 {
			delete(c.open, principal)
		}
	}, true
}

// HoldStream counts an event stream or a wait of principal against
// limits.max_streams_per_principal until release, or refuses it with
// rate_limited (429, Retry-After: 1) when the principal has that many
// open already. A request refused so has done nothing yet: a wait is
// held before its order is recorded. release is called once.
func (s *Server) HoldStream(principal string) (release func(), err error) {
	limit := s.Settings().MaxStreams
	if limit <= 0 {
		return func() {}, nil
	}
	if release, ok := s.streams.take(principal, limit); ok {
		return release, nil
	}
	return nil, &order.Error{Code: order.CodeRateLimited,
		Message: "too many open streams: at most " + strconv.Itoa(limit) + " event streams and waits at once per principal (limits.max_streams_per_principal)",
		Details: map[string]any{"scope": "streams", "limit": limit, "retry_after_seconds": int64(1)}}
}
