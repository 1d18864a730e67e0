package api_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/order"
)

// failingReads is a store whose order reads fail while failures is
// positive (one per read), as they do while PostgreSQL restarts.
type failingReads struct {
	api.Store
	failures *atomic.Int64
}

func (f failingReads) GetOrder(ctx context.Context, id uuid.UUID) (*order.Order, error) {
	if f.failures.Add(-1) >= 0 {
		return nil, errors.New("failed to connect to `host=/tmp user=orderly database=orderly`: server error (FATAL: the database system is shutting down (SQLSTATE 57P03))")
	}
	return f.Store.GetOrder(ctx, id)
}

// TestHTTPExecWaitOutlastsAFailedRead: a read of the order that fails
// while an httpexec request waits for it (PostgreSQL restarting) does not
// end the wait. It did: the request took its order, still running, for
// one that outlived the wait, killed it and answered 500 `did not finish
// within 30s; canceled`; a client told so sends the request again, to
// run a command that had been killed halfway.
func TestHTTPExecWaitOutlastsAFailedRead(t *testing.T) {
	var failures atomic.Int64
	hx := newHTTPExecSurface(t, envOptions{store: func(s api.Store) api.Store { return failingReads{Store: s, failures: &failures} }})
	failures.Store(1)
	resp, err := http.Post(hx.url+"/dash", "application/json",
		strings.NewReader(`{"args":["-c","sleep 1.5; echo done"],"stdout":{"capture":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != `{"return":0,"stderr":null,"stdout":{"content":"done\n","encode":null}}` {
		t.Errorf("with a read failing during the wait: %d %q, want 200 and the command's output", resp.StatusCode, b)
	}
	if failures.Load() > 0 {
		t.Errorf("no read failed (%d left): the test proves nothing", failures.Load())
	}
	if got := sourceStatuses(t, hx.apiEnv, "httpexec"); len(got) != 1 || got[0] != string(order.StatusSucceeded) {
		t.Errorf("the order is %v, want [succeeded]", got)
	}
}
