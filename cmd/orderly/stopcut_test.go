package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderly-run/orderly/internal/testenv"
)

// TestRequestCutByTheAPIStopIsA503: the API's stop ends its requests'
// context so that long waits do not hold it, and a request then waiting
// on PostgreSQL ended with context.Canceled, taken for a client gone
// away: the client, still there, was answered 500 "internal error", with
// nothing logged above debug (a poller in TestFaultsServeLongOrder met it
// while serve stopped with its PostgreSQL killed). It is a 503 the client
// may retry, as any other dependency wait cut short.
func TestRequestCutByTheAPIStopIsA503(t *testing.T) {
	s := newStack(t)
	ctx := testenv.Context(t)
	conn, err := pgx.Connect(ctx, s.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	// The order's read waits behind this lock until the stop cuts it.
	if _, err := tx.Exec(ctx, `LOCK TABLE orders IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}

	type answer struct {
		status int
		body   []byte
		err    error
	}
	got := make(chan answer, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/v1/orders/"+uuid.New().String(), nil)
		if err != nil {
			got <- answer{err: err}
			return
		}
		req.Header.Set("Authorization", "Bearer "+s.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			got <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- answer{status: resp.StatusCode, body: b, err: err}
	}()
	// Watched from a connection of its own: in the lock's transaction,
	// pg_stat_activity is read once and that read is shown again until
	// the transaction ends, so a read that reached the lock after the
	// first look was never seen (the wait ran out once in 1 of 3 runs).
	// The GET's own statement (the order with its cancel request): the
	// API's loops that read orders wait on the lock too, and the stop
	// could come before the GET was sent.
	watch, err := pgx.Connect(ctx, s.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(context.Background())
	testenv.WaitUntil(t, 30*time.Second, "the order's read waiting on the lock", func() bool {
		var n int
		err := watch.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%cancel_actor%'`).Scan(&n)
		return err == nil && n > 0
	})
	go s.api.shutdown()

	var a answer
	select {
	case a = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("no answer 30 s after the API's stop")
	}
	if a.err != nil {
		t.Fatal(a.err)
	}
	var env struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	_ = json.Unmarshal(a.body, &env)
	if a.status != http.StatusServiceUnavailable || env.Error.Code != "unavailable" {
		t.Fatalf("a read cut by the API's stop was answered %d %s, want 503 unavailable", a.status, a.body)
	}
}
