package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestReadyzWarnsOfAGenerationSignedWithAnotherKey: an API replica that
// read a publish generation signed with another key (a replica on
// another NATS seed wrote it, and the two write over each other's) stays
// ready, and /readyz says so under warnings.nats, with how many reads and
// the last one's time: what an operator checks on a replica, where the
// ERROR line of one process is said once an hour. Nothing said it but
// that ERROR at each read, which named a forger.
func TestReadyzWarnsOfAGenerationSignedWithAnotherKey(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	e.q.SignGenerations(queue.NewGenerationKey([]byte("this replica's seed")))
	if code, r := e.readyz(); code != http.StatusOK || r.Warnings["nats"] != "" {
		t.Fatalf("readyz before: %d %+v, want ready without a warning", code, r)
	}
	other := testenv.Queue(t, e.natsURL, "other-replica", queue.Options{})
	other.SignGenerations(queue.NewGenerationKey([]byte("another replica's seed")))
	ctx := testenv.Context(t)
	// The intake's own comparison may write this replica's over it
	// meanwhile: written again until this replica has read it.
	testenv.WaitUntil(t, 20*time.Second, "this replica to read the other's generation", func() bool {
		if err := other.RaisePostgresMark(ctx, 1<<40); err != nil {
			t.Fatal(err)
		}
		if _, err := e.q.PostgresMark(ctx); err != nil {
			t.Fatal(err)
		}
		n, _ := e.q.ForeignGenerations()
		return n > 0
	})
	code, r := e.readyz()
	if code != http.StatusOK || r.Status != "ready" ||
		!strings.HasPrefix(r.Warnings["nats"], "publish generation signed with another key: ") ||
		!strings.Contains(r.Warnings["nats"], " reads since start, the last at ") {
		t.Fatalf("readyz after another key's generation: %d %+v, want ready, with warnings.nats saying so", code, r)
	}
}
