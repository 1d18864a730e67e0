package natsembed

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/queue"
)

// TestMoreThanAThousandHosts: the orders stream has a consumer per host,
// and nats-server caps the consumers of a stream that sets no limit at
// 1,000 (its default_max_consumers); the embedded server refused the
// 1,001st host's consumer ("maximum consumers limit reached").
func TestMoreThanAThousandHosts(t *testing.T) {
	s, err := Start(Options{Dir: t.TempDir(), Port: -1, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := t.Context()
	q, err := queue.New(ctx, nc, queue.Options{AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1001 {
		if _, err := q.HostConsumer(ctx, fmt.Sprintf("h%04d", i)); err != nil {
			t.Fatalf("host %d: %v", i+1, err)
		}
	}
}
