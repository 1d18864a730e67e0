package api

import (
	"testing"

	"github.com/orderly-run/orderly/internal/order"
)

// TestTinyTimeoutIsRefused: a positive timeout_seconds shorter than a
// nanosecond is refused as one under a millisecond is (timeouts are
// stored in milliseconds); it used to become 0 and so, silently, the
// server's default timeout.
func TestTinyTimeoutIsRefused(t *testing.T) {
	for _, secs := range []float64{1e-10, 1e-300, 0.0005} {
		req := SubmitRequest{Host: "h1", Command: "true", TimeoutSeconds: secs}
		o, err := req.toOrder()
		if err == nil {
			err = order.Validate(o, order.DefaultLimits())
		}
		if order.ErrorCode(err) != order.CodeInvalid {
			t.Errorf("timeout_seconds %g: %v (timeout %s), want invalid", secs, err, o.Timeout)
		}
	}
}
