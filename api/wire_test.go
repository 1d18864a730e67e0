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

// TestToStreamAllocations: a kept stream's answer, its digest in hex
// included: 3 allocations, 2 of them hex.EncodeToString's for the digest
// (its buffer, then the string); 2 now (the digest's string, the
// content's).
func TestToStreamAllocations(t *testing.T) {
	sum := make([]byte, 32)
	for i := range sum {
		sum[i] = byte(i * 7)
	}
	out := order.Output{Content: []byte("hello\n"), Bytes: 6, SHA256: sum}
	n := testing.AllocsPerRun(200, func() {
		if s := toStream(out, order.EncodeText); s.SHA256 != "00070e151c232a31383f464d545b626970777e858c939aa1a8afb6bdc4cbd2d9" || s.Content != "hello\n" {
			t.Fatalf("%+v", s)
		}
	})
	if n > 2 {
		t.Fatalf("%.0f allocations for a stream's answer, want at most 2", n)
	}
}
