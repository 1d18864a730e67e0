package api

import (
	"bytes"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
)

// BenchmarkOrderETag measures what a poll of GET /v1/orders/{id} pays for
// its tag: a running order (no result), a finished one whose 60 KiB of
// output the read holds (hashed), and one whose 1.5 MB the read left in
// the database (not read, not hashed).
func BenchmarkOrderETag(b *testing.B) {
	now := time.Now()
	base := order.Order{ID: uuid.New(), Kind: order.KindExec, Host: "web-1", Command: "seq", Args: []string{"1", "200000"},
		Principal: "alice", Source: "rest", SubmittedAt: now, StartedAt: &now, Status: order.StatusRunning}
	out := func(n int) order.Output {
		c := bytes.Repeat([]byte("123456\n"), n/7)
		sum := sha256.Sum256(c)
		return order.Output{Content: c, Bytes: int64(len(c)), SHA256: sum[:]}
	}
	exit := 0
	small, left := base, base
	small.Status, left.Status = order.StatusSucceeded, order.StatusSucceeded
	small.Result = &order.Result{ExitCode: &exit, Stdout: out(60 << 10)}
	lo := out(1500 << 10)
	lo.Content = nil
	left.Result = &order.Result{ExitCode: &exit, Stdout: lo}
	for _, c := range []struct {
		name string
		o    *order.Order
	}{{"running", &base}, {"finished_60KiB", &small}, {"finished_1.5MB_left", &left}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				_ = orderETag(c.o, toResponse)
			}
		})
	}
}
