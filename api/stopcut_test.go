package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// stopAt ends the base context of the server a case runs (its stop, as
// cmd/orderly's apiRunner.shutdown does: api.ErrStopping) when a call
// the case names is made.
type stopAt struct {
	stop atomic.Pointer[func()]
	// at names the call that stops the server: "insert <host>" (a
	// submission's insert of an order for host, done), "finished" (a
	// wait's read of the finished order, done), "get" (a read of the
	// order, which fails with bug), "get cut" (a read of the order, cut
	// by the stop: context.Canceled).
	at  atomic.Pointer[string]
	bug error
}

func (s *stopAt) cut(at string) bool {
	if p := s.at.Load(); p == nil || *p != at {
		return false
	}
	if f := s.stop.Load(); f != nil {
		(*f)()
	}
	return true
}

type stopAtInsert struct {
	intake.Store
	s *stopAt
}

func (st stopAtInsert) InsertOrder(ctx context.Context, o *order.Order) (*order.Order, error) {
	prev, err := st.Store.InsertOrder(ctx, o)
	st.s.cut("insert " + o.Host)
	return prev, err
}

type stopAtRead struct {
	api.Store
	s *stopAt
}

func (st stopAtRead) GetOrderLean(ctx context.Context, id uuid.UUID) (*order.Order, error) {
	o, err := st.Store.GetOrderLean(ctx, id)
	if err == nil && o.Status.Terminal() {
		st.s.cut("finished")
	}
	return o, err
}

func (st stopAtRead) GetOrderLeanWithCancel(ctx context.Context, id uuid.UUID) (*order.Order, *postgres.CancelRequest, error) {
	if st.s.cut("get") {
		return nil, nil, st.s.bug
	}
	if st.s.cut("get cut") {
		// What a read waiting on PostgreSQL returns when the stop ends it.
		return nil, nil, fmt.Errorf("read order %s: %w", id, context.Canceled)
	}
	return st.Store.GetOrderLeanWithCancel(ctx, id)
}

// TestAPIStopKeepsWhatAnAnswerSays: the API's stop ends its requests'
// base context with api.ErrStopping, and writeError answered every
// failure of a request so ended "503 the server is stopping: try again".
// That is right for the cut itself (a read waiting on PostgreSQL, ended
// with context.Canceled: cmd/orderly's TestRequestCutByTheAPIStopIsA503),
// and wrong for the rest. An order recorded whose publish failed lost
// the 503 that names it ("recorded but not yet queued", details.order_id)
// and a submission whose order ran to its end and whose answer the stop
// cut (its kept output read from PostgreSQL) said nothing of the order
// either: "try again", without an Idempotency-Key, records and runs it
// a second time; a fan-out's answer, which reads its recorded orders
// back, the same for every order of the batch. A failure of the API's
// own during the stop (a bug) was a 503 as well, its cause logged as
// "the server is stopping".
func TestAPIStopKeepsWhatAnAnswerSays(t *testing.T) {
	s := &stopAt{bug: errors.New("injected: a bug in reading the order")}
	failures := new(atomic.Int64)
	logs := &testenv.LogBuffer{}
	e := newAPIEnv(t, envOptions{hosts: []string{"web-1"}, publishFailures: failures,
		logger:      slog.New(slog.NewJSONHandler(logs, nil)),
		intakeStore: func(st intake.Store) intake.Store { return stopAtInsert{st, s} },
		store:       func(st api.Store) api.Store { return stopAtRead{st, s} }})
	ctx := testenv.Context(t)

	// serve answers one request on a server of its own, stopped (its base
	// context ended with api.ErrStopping) at the call the case names.
	serve := func(at, method, path, body string) (int, api.ErrorBody, string) {
		t.Helper()
		base, stop := context.WithCancelCause(context.Background())
		defer stop(nil)
		f := func() { stop(api.ErrStopping) }
		s.stop.Store(&f)
		s.at.Store(&at)
		defer s.at.Store(nil)
		hs := httptest.NewUnstartedServer(e.handler)
		hs.Config.BaseContext = func(net.Listener) context.Context { return base }
		hs.Start()
		defer hs.Close()
		req, err := http.NewRequestWithContext(ctx, method, hs.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if base.Err() == nil {
			t.Fatalf("%s %s: the server was not stopped at %q (the case proves nothing): %d %s", method, path, at, resp.StatusCode, b)
		}
		var env api.ErrorBody
		_ = json.Unmarshal(b, &env)
		return resp.StatusCode, env, string(b)
	}
	recorded := func(what string, env api.ErrorBody, body string) uuid.UUID {
		t.Helper()
		id, err := uuid.Parse(func() string { s, _ := env.Error.Details["order_id"].(string); return s }())
		if err != nil {
			t.Fatalf("%s: the 503 does not name the order it recorded (details.order_id): %s", what, body)
		}
		if _, err := e.store.GetOrder(ctx, id); err != nil {
			t.Fatalf("%s: the order the 503 names: %v", what, err)
		}
		return id
	}

	t.Run("an order recorded, its publish failed", func(t *testing.T) {
		failures.Store(1)
		code, env, body := serve("insert idle-1", http.MethodPost, "/v1/orders", `{"host":"idle-1","command":"echo"}`)
		if code != http.StatusServiceUnavailable || env.Error.Code != order.CodeUnavailable || !strings.Contains(env.Error.Message, "recorded") {
			t.Fatalf("answered %d %s, want 503 unavailable saying the order is recorded", code, body)
		}
		recorded("a publish that failed", env, body)
	})

	t.Run("an order that ran, its answer cut", func(t *testing.T) {
		// Past postgres.LeaveOutputsFrom: the answer reads the kept
		// output from PostgreSQL, after the wait read the order.
		code, env, body := serve("finished", http.MethodPost, "/v1/orders?wait=30",
			`{"host":"web-1","command":"sh","args":["-c","head -c 200000 /dev/zero | tr '\\0' a"]}`)
		if code != http.StatusServiceUnavailable || env.Error.Code != order.CodeUnavailable || !strings.Contains(env.Error.Message, "recorded") {
			t.Fatalf("answered %d %s, want 503 unavailable saying the order is recorded", code, body)
		}
		id := recorded("an answer cut", env, body)
		if o, err := e.store.GetOrder(ctx, id); err != nil || o.Status != order.StatusSucceeded {
			t.Fatalf("the order the 503 names: %v, %v; want it succeeded", o, err)
		}
	})

	t.Run("a fan-out recorded, its answer cut", func(t *testing.T) {
		// Its orders recorded (the stop came with the last insert), the
		// answer reads them back.
		code, env, body := serve("insert idle-3", http.MethodPost, "/v1/orders", `{"hosts":["idle-2","idle-3"],"command":"echo"}`)
		if code != http.StatusServiceUnavailable || env.Error.Code != order.CodeUnavailable || !strings.Contains(env.Error.Message, "recorded") {
			t.Fatalf("answered %d %s, want 503 unavailable saying the orders are recorded", code, body)
		}
		batch, err := uuid.Parse(func() string { s, _ := env.Error.Details["batch_id"].(string); return s }())
		if err != nil {
			t.Fatalf("the 503 does not name the batch it recorded (details.batch_id): %s", body)
		}
		var n int
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM orders WHERE batch_id = $1`, batch).Scan(&n); err != nil || n == 0 {
			t.Fatalf("the batch the 503 names holds %d orders (%v)", n, err)
		}
	})

	t.Run("the cut itself is a 503, logged as no error", func(t *testing.T) {
		// STYLE: context.Canceled during shutdown is not an error; it
		// was logged "request failed" at ERROR, as an outage's 503s are.
		id := order.NewID().String()
		code, env, body := serve("get cut", http.MethodGet, "/v1/orders/"+id, "")
		if code != http.StatusServiceUnavailable || env.Error.Code != order.CodeUnavailable || !strings.Contains(env.Error.Message, "stopping") {
			t.Fatalf("a read cut by the stop was answered %d %s, want 503 unavailable, the server stopping", code, body)
		}
		var line string
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, id) {
				line = l
			}
		}
		if !strings.Contains(line, `"level":"INFO"`) || !strings.Contains(line, "request cut by the stop") {
			t.Fatalf("the cut was logged %q, want one INFO line \"request cut by the stop\"", line)
		}
	})

	t.Run("a failure of its own is a 500", func(t *testing.T) {
		code, env, body := serve("get", http.MethodGet, "/v1/orders/"+order.NewID().String(), "")
		if code != http.StatusInternalServerError || env.Error.Code != order.CodeInternal {
			t.Fatalf("a bug during the stop was answered %d %s, want 500 internal", code, body)
		}
	})
}
