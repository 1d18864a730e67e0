package testenv

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Answered sends a NATS request (req, under the context it is given) until
// one is answered, at most 30 s, and returns that answer's error: right
// after nats-server restarts, or while the machine stalls, a JetStream
// request can go unanswered for seconds (5 s once in CI), which says
// nothing of what the test checks. Each is given TryTimeout; an answer, an
// error included, ends the wait. what names the request for the failure.
func Answered(t testing.TB, what string, req func(ctx context.Context) error) error {
	t.Helper()
	var err error
	WaitUntilAnswered(t, 30*time.Second, what+" is answered", func(ctx context.Context) bool {
		err = req(ctx)
		return !unanswered(err)
	})
	return err
}

// unanswered reports whether err is a request's timeout rather than an
// answer.
func unanswered(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse)
}
