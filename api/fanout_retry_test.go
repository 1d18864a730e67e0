package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/testenv"
)

// fanOutPost posts a fan-out as principal with an Idempotency-Key and
// returns the status, the batch answered and its Idempotent-Replayed
// header.
func fanOutPost(e *apiEnv, as, key string, body map[string]any) (int, api.Batch, string, []byte) {
	e.t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(testenv.Context(e.t), http.MethodPost, e.url+"/v1/orders", bytes.NewReader(b))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.tokens[as])
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var batch api.Batch
	_ = json.Unmarshal(raw, &batch)
	return resp.StatusCode, batch, resp.Header.Get("Idempotent-Replayed"), raw
}

// TestFanOutRetryMatchesItsRecordedHosts: a keyed fan-out's glob matched
// two hosts; both were forgotten since, so the glob matches no known host.
// The retry (same principal, key and request) was refused 422 "matches no
// known host" before its key was looked up, and the client concluded that
// nothing ran; it is answered with the two recorded orders, marked
// replayed. Another key, or another principal with the key, is still
// refused, and nothing new is recorded.
func TestFanOutRetryMatchesItsRecordedHosts(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	ctx := testenv.Context(t)
	for _, h := range []string{"gone-1", "gone-2"} {
		if err := e.store.TouchHost(ctx, h, "1.0", h+"/1"); err != nil {
			t.Fatal(err)
		}
	}
	req := map[string]any{"hosts": []string{"gone-*"}, "command": "true"}
	code, first, replayed, raw := fanOutPost(e, "admin", "fan-gone", req)
	if code != http.StatusAccepted || len(first.Orders) != 2 || replayed != "" {
		t.Fatalf("first fan-out: %d (replayed %q) %s", code, replayed, raw)
	}
	if _, err := e.pool.Exec(ctx, `DELETE FROM hosts WHERE host LIKE 'gone-%'`); err != nil {
		t.Fatal(err)
	}

	code, retry, replayed, raw := fanOutPost(e, "admin", "fan-gone", req)
	if code != http.StatusAccepted || replayed != "true" || retry.BatchID != first.BatchID || len(retry.Orders) != 2 ||
		retry.Orders[0].ID != first.Orders[0].ID || retry.Orders[1].ID != first.Orders[1].ID {
		t.Fatalf("the retry after its hosts were forgotten: %d (replayed %q) %s; first %+v", code, replayed, raw, first)
	}
	for _, c := range []struct{ as, key string }{{"admin", "fan-gone-2"}, {"alice", "fan-gone"}} {
		code, _, _, raw := fanOutPost(e, c.as, c.key, req)
		wantError(t, code, raw, http.StatusUnprocessableEntity, "unprocessable")
	}
	var n int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM orders`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("%d orders recorded (%v), want the first try's 2", n, err)
	}
}

// TestFanOutRetryPastTheCapIsItsRecord: a keyed fan-out's glob matched
// two hosts; the fleet has grown since, and the glob now matches more
// hosts than one fan-out may reach. Its retry was refused 413 before the
// key was looked up; it is answered with the two recorded orders, marked
// replayed, and makes no order on the new hosts. A new key is refused.
func TestFanOutRetryPastTheCapIsItsRecord(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	ctx := testenv.Context(t)
	for _, h := range []string{"big-a", "big-b"} {
		if err := e.store.TouchHost(ctx, h, "1.0", h+"/1"); err != nil {
			t.Fatal(err)
		}
	}
	req := map[string]any{"hosts": []string{"big-*"}, "command": "true"}
	code, first, _, raw := fanOutPost(e, "admin", "fan-big", req)
	if code != http.StatusAccepted || len(first.Orders) != 2 {
		t.Fatalf("first fan-out: %d %s", code, raw)
	}
	if _, err := e.pool.Exec(ctx, `INSERT INTO hosts (host) SELECT 'big-' || n FROM generate_series(1, 1000) n`); err != nil {
		t.Fatal(err)
	}
	code, retry, replayed, raw := fanOutPost(e, "admin", "fan-big", req)
	if code != http.StatusAccepted || replayed != "true" || retry.BatchID != first.BatchID || len(retry.Orders) != 2 {
		t.Fatalf("the retry past the cap: %d (replayed %q) %.300s", code, replayed, raw)
	}
	code, _, _, raw = fanOutPost(e, "admin", "fan-big-2", req)
	wantError(t, code, raw, http.StatusRequestEntityTooLarge, "too_large")
	var n int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM orders`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("%d orders recorded (%v), want the first try's 2", n, err)
	}
}
