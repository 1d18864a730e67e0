package worker

import (
	"bytes"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
)

// TestStateLinesBelowTheirLevelAllocateNothing holds the worker's two
// state-change lines of every order to nothing made when they are not
// written (a logger above info, as the bench's serve logs at warn): their
// argument lists and boxed values were seven allocations per order
// (docs/benchmarks.md, "Serve's sync order, message by message").
// At info, both lines are still written, with what they said.
func TestStateLinesBelowTheirLevelAllocateNothing(t *testing.T) {
	code := 0
	o := &order.Order{ID: order.NewID(), Host: "lines-1", Principal: "test", Command: "true", Attempt: 1, StreamSeq: 7}
	f := postgres.Finish{Status: order.StatusSucceeded, Result: order.Result{ExitCode: &code, DurationMS: 3}}

	w := &Worker{logger: slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if n := testing.AllocsPerRun(100, func() { w.logStarted(o); w.logFinished(o, f) }); n != 0 {
		t.Errorf("the state lines of an order made %.1f allocations with the logger at warn, want 0", n)
	}

	var buf bytes.Buffer
	w.logger = slog.New(slog.NewTextHandler(&buf, nil))
	w.logStarted(o)
	w.logFinished(o, f)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("at info, %d lines, want 2:\n%s", len(lines), buf.String())
	}
	for i, want := range []string{
		`msg="order started" order_id=` + o.ID.String() + ` principal=test attempt=1 stream_seq=7 command=true`,
		`msg="order finished" order_id=` + o.ID.String() + ` principal=test status=succeeded exit_code=0 duration_ms=3`,
	} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("line %d is %q, want it to hold %q", i+1, lines[i], want)
		}
	}
}
