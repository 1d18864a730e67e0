package api_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/testenv"
)

// openStream opens the event stream of order id as principal and reads
// until its first event, so the stream is counted; it stays open until
// the returned function closes it.
func openStream(t *testing.T, e *apiEnv, as string, id uuid.UUID) (closeIt func()) {
	t.Helper()
	resp := getStream(t, testenv.Context(t), e, as, id)
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		t.Fatalf("%s: stream %d, want 200", as, resp.StatusCode)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "id:") && !strings.HasPrefix(line, "event:") {
		resp.Body.Close()
		t.Fatalf("%s: first line of the stream %q %v", as, line, err)
	}
	return func() { resp.Body.Close() }
}

// TestStreamsPerPrincipalAreBounded: the requests that stay open while an
// order runs (event streams, waits) count against
// limits.max_streams_per_principal. Past it a principal's next one is
// refused with 429 rate_limited and Retry-After, before a waiting
// submission records anything; other principals, and submissions that do
// not wait, go on; a stream that ends gives its place back.
func TestStreamsPerPrincipalAreBounded(t *testing.T) {
	e := newAPIEnv(t, envOptions{maxStreams: 2}) // no worker: orders stay queued, streams open
	o := e.submit("alice", map[string]any{"host": "h1", "command": "true"}, "", http.StatusAccepted)
	first := openStream(t, e, "alice", o.ID)
	second := openStream(t, e, "alice", o.ID)
	defer second()

	code, b, retry := tryStream(t, e, "alice", o.ID)
	wantError(t, code, b, http.StatusTooManyRequests, "rate_limited")
	if retry != "1" || !strings.Contains(string(b), `"scope":"streams"`) || !strings.Contains(string(b), "max_streams_per_principal") {
		t.Errorf("the refusal does not say which limit or when to come back: Retry-After %q, %s", retry, b)
	}

	count := func() (n int) {
		if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM orders WHERE principal = 'alice'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := count()
	for _, body := range []map[string]any{
		{"host": "h1", "command": "true"},
		{"hosts": []string{"h1", "h2"}, "command": "true"}, // a fan-out
	} {
		code, b = e.do("alice", "POST", "/v1/orders?wait=5", body)
		wantError(t, code, b, http.StatusTooManyRequests, "rate_limited")
	}
	if n := count(); n != before {
		t.Fatalf("refused waits recorded %d orders", n-before)
	}
	// Not waiting is not limited; nor is another principal.
	e.submit("alice", map[string]any{"host": "h1", "command": "true"}, "", http.StatusAccepted)
	bob := e.submit("bob", map[string]any{"host": "h1", "command": "true"}, "", http.StatusAccepted)
	openStream(t, e, "bob", bob.ID)()

	first()
	testenv.WaitUntil(t, 10*time.Second, "a closed stream's place back", func() bool {
		code, _, _ := tryStream(t, e, "alice", o.ID)
		return code == http.StatusOK
	})
}

// tryStream opens the event stream of order id as principal and closes it
// once its status is known (an open stream would only end with the order).
func tryStream(t *testing.T, e *apiEnv, as string, id uuid.UUID) (code int, body []byte, retryAfter string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(testenv.Context(t), 5*time.Second)
	defer cancel()
	resp := getStream(t, ctx, e, as, id)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ = io.ReadAll(resp.Body)
	}
	return resp.StatusCode, body, resp.Header.Get("Retry-After")
}

// getStream sends GET /v1/orders/{id}/events as principal.
func getStream(t *testing.T, ctx context.Context, e *apiEnv, as string, id uuid.UUID) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", e.url+"/v1/orders/"+id.String()+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.tokens[as])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}
