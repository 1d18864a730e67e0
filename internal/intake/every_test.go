package intake

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestEveryLogsAFailingJobOnce: a periodic job that fails run after run
// (PostgreSQL down) logs its first failure and its recovery, not every
// failure.
func TestEveryLogsAFailingJobOnce(t *testing.T) {
	var buf bytes.Buffer // read once the job's goroutine is done
	s := &Service{logger: slog.New(slog.NewTextHandler(&buf, nil))}
	ctx, cancel := context.WithCancel(t.Context())
	runs := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.every(ctx, time.Millisecond, time.Millisecond, "expire orders", func(context.Context) (int, error) {
			runs++
			switch {
			case runs <= 50:
				return 0, errors.New("database unavailable")
			case runs == 51:
				return 2, nil
			default:
				cancel()
				return 0, nil
			}
		})
	}()
	<-done
	out := buf.String()
	if n := strings.Count(out, "database unavailable"); n != 1 {
		t.Errorf("50 failures in a row logged %d times:\n%s", n, out)
	}
	if !strings.Contains(out, `msg="expire orders: working again" failures=50 count=2`) {
		t.Errorf("the recovery is not logged:\n%s", out)
	}
}
