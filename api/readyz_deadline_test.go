package api_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/orderly-run/orderly/api"
)

// frozenPing is the store with a PostgreSQL that accepts the readiness
// check's ping and never answers it (a server stopped, its disk hung),
// until the check's deadline.
type frozenPing struct{ api.Store }

func (frozenPing) Ping(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestReadyzNamesOnlyTheDependencyThatDoesNotAnswer: with PostgreSQL
// frozen, /readyz said NATS was unavailable too. The two checks shared
// one deadline, which PostgreSQL's ping used up, so NATS's ping, on a
// server that answered, failed at once: an operator sent to NATS by the
// probe's answer found nothing wrong there.
func TestReadyzNamesOnlyTheDependencyThatDoesNotAnswer(t *testing.T) {
	e := newAPIEnv(t, envOptions{store: func(s api.Store) api.Store { return frozenPing{Store: s} }})
	code, r := e.readyz()
	if code != http.StatusServiceUnavailable || r.Checks["postgres"] != "unavailable" {
		t.Errorf("/readyz with PostgreSQL frozen: %d %+v, want 503 with postgres unavailable", code, r)
	}
	if r.Checks["nats"] != "ok" {
		t.Errorf("/readyz with PostgreSQL frozen and NATS answering: nats %q (reasons %v), want ok", r.Checks["nats"], r.Reasons)
	}
}
