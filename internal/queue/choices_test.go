package queue_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/queue"
)

// TestChoicesOfAHostWithoutWorker: a host no worker serves is "no worker
// answered" (the server's no-responders status comes back at once), not
// a reason given by a worker; a served host answers its units.
func TestChoicesOfAHostWithoutWorker(t *testing.T) {
	q, _ := newQueue(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if units, err := q.RequestChoices(ctx, "nobody", "example@*.service"); !errors.Is(err, queue.ErrNoChoices) {
		t.Errorf("choices of a host no worker serves: %+v %v, want ErrNoChoices", units, err)
	}

	want := queue.Unit{Name: "example@0042.service", LoadState: "loaded", ActiveState: "active", SubState: "running"}
	if err := q.ServeChoices(t.Context(), "web-1", func(ctx context.Context, glob string) ([]queue.Unit, error) {
		if glob != "example@*.service" {
			return nil, errors.New("no such glob")
		}
		return []queue.Unit{want}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if units, err := q.RequestChoices(ctx, "web-1", "example@*.service"); err != nil || len(units) != 1 || units[0] != want {
		t.Errorf("choices of web-1: %+v %v", units, err)
	}
	if _, err := q.RequestChoices(ctx, "web-1", "*.service"); err == nil || errors.Is(err, queue.ErrNoChoices) || err.Error() != "no such glob" {
		t.Errorf("a refused glob: %v, want the worker's reason", err)
	}
}
