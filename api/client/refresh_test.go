package client_test

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderly-run/orderly/api/client"
	"github.com/orderly-run/orderly/internal/testenv"
)

// answers records, per status, the answers to GET /v1/orders/{id} that a
// client was given and how many body bytes they held. With noEvents it
// refuses the event stream as a proxy that does not pass
// text/event-stream would (404), so that Follow polls.
type answers struct {
	mu       sync.Mutex
	statuses map[int]int
	bytes    int64
	noEvents bool
}

func (a *answers) RoundTrip(req *http.Request) (*http.Response, error) {
	if a.noEvents && strings.HasSuffix(req.URL.Path, "/events") {
		return &http.Response{StatusCode: http.StatusNotFound, Status: "404 Not Found", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Content-Type": {"text/plain"}}, Body: io.NopCloser(strings.NewReader("no such route")), Request: req}, nil
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || !strings.HasPrefix(req.URL.Path, "/v1/orders/") || strings.Count(req.URL.Path, "/") != 3 {
		return resp, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	a.mu.Lock()
	defer a.mu.Unlock()
	a.statuses[resp.StatusCode]++
	a.bytes += int64(len(b))
	return resp, nil
}

func (a *answers) count() (map[int]int, int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := map[int]int{}
	for k, v := range a.statuses {
		m[k] = v
	}
	return m, a.bytes
}

func recordingClient(t *testing.T, s *server, a *answers) *client.Client {
	t.Helper()
	c, err := client.New(s.url, s.tokens["alice"], client.WithHTTPClient(&http.Client{Transport: a}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestClientRefreshIsConditional: Refresh sends back the ETag of the
// order it was given, and an unchanged order (a finished one with its
// output) comes back as 304 without a body: the client's polling read
// the whole order, output included, at every round.
func TestClientRefreshIsConditional(t *testing.T) {
	s := newServer(t, "web-1")
	a := &answers{statuses: map[int]int{}}
	c := recordingClient(t, s, a)
	ctx := testenv.Context(t)

	sub, err := c.Submit(ctx, client.SubmitRequest{Host: "web-1", Command: "sh", Args: []string{"-c", "head -c 200000 /dev/zero | tr '\\0' x"}},
		client.SubmitOptions{Wait: 20 * time.Second})
	if err != nil || !sub.Finished || sub.Order.Status != client.StatusSucceeded {
		t.Fatalf("submit: %v %+v", err, sub)
	}
	if sub.Order.ETag != "" {
		t.Fatalf("a submission's order has the ETag %q: no GET answered it", sub.Order.ETag)
	}
	o, err := c.Get(ctx, sub.Order.ID.String())
	if err != nil || o.ETag == "" || o.Result == nil || o.Result.Stdout.Bytes != 200000 {
		t.Fatalf("Get: %v, ETag %q", err, o.ETag)
	}
	_, before := a.count()
	for range 3 {
		again, changed, err := c.Refresh(ctx, o)
		if err != nil || changed || again != o {
			t.Fatalf("Refresh of a finished order: %v, changed %v, same %v", err, changed, again == o)
		}
	}
	statuses, after := a.count()
	if statuses[http.StatusNotModified] != 3 || after-before > 1000 {
		t.Fatalf("three refreshes of a finished order: answers %v, %d body bytes (want three 304s, no body)", statuses, after-before)
	}
	if len(o.Raw) == 0 || o.Result.Stdout.Content == "" {
		t.Fatal("Refresh emptied the kept order")
	}

	// A change is read in full, with the new tag.
	q, err := c.Submit(ctx, client.SubmitRequest{Host: "offline", Command: "true"}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	queued, changed, err := c.Refresh(ctx, q.Order) // no ETag yet: a plain read
	if err != nil || !changed || queued.ETag == "" || queued.Status != client.StatusQueued {
		t.Fatalf("Refresh of a submission's order: %v, changed %v, %+v", err, changed, queued)
	}
	if _, err := c.Cancel(ctx, q.Order.ID.String(), ""); err != nil {
		t.Fatal(err)
	}
	canceled, changed, err := c.Refresh(ctx, queued)
	if err != nil || !changed || canceled == queued || canceled.Status != client.StatusCanceled || canceled.ETag == queued.ETag {
		t.Fatalf("Refresh of a canceled order: %v, changed %v, %+v", err, changed, canceled)
	}
}

// TestClientFollowPollsConditionally: Follow without an event stream
// polls the order with If-None-Match, so a running order that has not
// changed is answered 304.
func TestClientFollowPollsConditionally(t *testing.T) {
	s := newServer(t, "web-1")
	a := &answers{statuses: map[int]int{}, noEvents: true}
	c := recordingClient(t, s, a)
	ctx := testenv.Context(t)
	sub, err := c.Submit(ctx, client.SubmitRequest{Host: "web-1", Command: "sh", Args: []string{"-c", "sleep 2; echo done"}}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	final, err := c.Follow(ctx, sub.Order.ID.String(), client.FollowOptions{Stdout: &stdout})
	if err != nil || final.Status != client.StatusSucceeded || stdout.String() != "done\n" {
		t.Fatalf("Follow by polling: %v, %+v, stdout %q", err, final, stdout.String())
	}
	statuses, _ := a.count()
	if statuses[http.StatusNotModified] == 0 || statuses[http.StatusOK] == 0 {
		t.Fatalf("Follow's polls were answered %v: none was 304", statuses)
	}
}

// TestClientFanOutRetryIsReplayed: a fan-out retried with its key is
// answered with the first one's batch marked Idempotent-Replayed
// (Submission.Replayed); the API did not mark a batch, so a client could
// not tell a retry's batch from a new one. A retry that reaches a host
// the first did not made an order and is not marked, and which of its
// orders are recorded ones is said per order (Batch.Replayed,
// Order.Replayed).
func TestClientFanOutRetryIsReplayed(t *testing.T) {
	s := newServer(t, "web-1", "web-2")
	c := newClient(t, s, "alice")
	ctx := testenv.Context(t)
	req := client.SubmitRequest{Hosts: []string{"web-1", "web-2"}, Command: "true"}
	first, err := c.Submit(ctx, req, client.SubmitOptions{IdempotencyKey: "fan-r", Wait: 20 * time.Second})
	if err != nil || first.Batch == nil || first.Replayed {
		t.Fatalf("fan-out: %v, batch %v, replayed %v", err, first != nil && first.Batch != nil, first != nil && first.Replayed)
	}
	again, err := c.Submit(ctx, req, client.SubmitOptions{IdempotencyKey: "fan-r"})
	if err != nil || again.Batch == nil || again.Batch.BatchID != first.Batch.BatchID || !again.Replayed {
		t.Fatalf("the fan-out retried: %v, replayed %v, want batch %s marked Replayed", err, again != nil && again.Replayed, first.Batch.BatchID)
	}
	// web-1's order is the first's, web-3's is new: not a replay.
	req.Hosts = []string{"web-1", "web-3"}
	wider, err := c.Submit(ctx, req, client.SubmitOptions{IdempotencyKey: "fan-r"})
	if err != nil || wider.Batch == nil || wider.Replayed || len(wider.Batch.Orders) != 2 {
		t.Fatalf("a retry that reaches a new host: %v, replayed %v, want two orders, not marked Replayed", err, wider != nil && wider.Replayed)
	}
	// Which of its orders are recorded ones is said per order.
	for _, o := range wider.Batch.Orders {
		if want := o.Host == "web-1"; o.Replayed != want {
			t.Errorf("the wider retry's order on %s: Replayed %v, want %v", o.Host, o.Replayed, want)
		}
	}
	if len(wider.Batch.Replayed) != 1 || wider.Batch.Replayed[0] != first.Batch.Orders[0].ID && wider.Batch.Replayed[0] != first.Batch.Orders[1].ID {
		t.Errorf("the wider retry's batch lists %v as replayed, want web-1's first order", wider.Batch.Replayed)
	}
	for _, o := range again.Batch.Orders {
		if !o.Replayed {
			t.Errorf("the retry's order on %s is not marked Replayed", o.Host)
		}
	}
	// A one-host order a submission returned says it too.
	one, err := c.Submit(ctx, client.SubmitRequest{Host: "web-1", Command: "true"}, client.SubmitOptions{IdempotencyKey: "one-r"})
	if err != nil || one.Order.Replayed {
		t.Fatalf("submit: %v, its order marked Replayed", err)
	}
	if one, err = c.Submit(ctx, client.SubmitRequest{Host: "web-1", Command: "true"}, client.SubmitOptions{IdempotencyKey: "one-r"}); err != nil || !one.Order.Replayed || !one.Replayed {
		t.Fatalf("retried submit: %v, want its order and the submission marked Replayed", err)
	}
}

// TestClientRefreshBatchAndHost: Batch and Host keep the answer's ETag,
// and RefreshBatch and RefreshHost send it back, so that polling an
// unchanged batch or host costs a 304 without a body; the client read
// both whole at every poll although the API answered If-None-Match.
func TestClientRefreshBatchAndHost(t *testing.T) {
	s := newServer(t, "web-1")
	a := &statusCounter{statuses: map[int]int{}}
	c, err := client.New(s.url, s.tokens["alice"], client.WithHTTPClient(&http.Client{Transport: a}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Context(t)

	sub, err := c.Submit(ctx, client.SubmitRequest{Hosts: []string{"web-1"}, Command: "echo", Args: []string{"batch"}},
		client.SubmitOptions{Wait: 20 * time.Second})
	if err != nil || !sub.Finished || sub.Batch == nil || sub.Batch.ETag != "" {
		t.Fatalf("fan-out: %v %+v", err, sub)
	}
	b, err := c.Batch(ctx, sub.Batch.BatchID.String())
	if err != nil || b.ETag == "" || len(b.Orders) != 1 {
		t.Fatalf("Batch: %v, ETag %q", err, b.ETag)
	}
	again, changed, err := c.RefreshBatch(ctx, b)
	if err != nil || changed || again != b || a.get(http.StatusNotModified) != 1 {
		t.Fatalf("RefreshBatch of a finished batch: %v, changed %v, same %v, 304s %d", err, changed, again == b, a.get(http.StatusNotModified))
	}

	// Without outputs, and refreshed so: the same 304 while unchanged.
	lean, err := c.BatchWith(ctx, sub.Batch.BatchID.String(), client.BatchOptions{WithoutOutputs: true})
	if err != nil || len(lean.Orders) != 1 || lean.Orders[0].Result == nil || lean.Orders[0].Result.Stdout.Content != "" ||
		lean.Orders[0].Result.Stdout.Bytes != int64(len("batch\n")) || lean.ETag == "" || lean.ETag == b.ETag {
		t.Fatalf("BatchWith WithoutOutputs: %v %s", err, lean.Raw)
	}
	if again, changed, err := c.RefreshBatch(ctx, lean); err != nil || changed || again != lean || a.get(http.StatusNotModified) != 2 {
		t.Fatalf("RefreshBatch of a batch read without outputs: %v, changed %v, 304s %d", err, changed, a.get(http.StatusNotModified))
	}

	// A host no worker serves: nothing changes it but a submission.
	if _, err := c.Submit(ctx, client.SubmitRequest{Host: "quiet-1", Command: "true"}, client.SubmitOptions{}); err != nil {
		t.Fatal(err)
	}
	h, err := c.Host(ctx, "quiet-1")
	if err != nil || h.ETag == "" || len(h.Queued) != 1 {
		t.Fatalf("Host: %v, ETag %q", err, h.ETag)
	}
	same, changed, err := c.RefreshHost(ctx, h)
	if err != nil || changed || same != h || a.get(http.StatusNotModified) != 3 {
		t.Fatalf("RefreshHost of an unchanged host: %v, changed %v, same %v, 304s %d", err, changed, same == h, a.get(http.StatusNotModified))
	}
	if _, err := c.Submit(ctx, client.SubmitRequest{Host: "quiet-1", Command: "true"}, client.SubmitOptions{}); err != nil {
		t.Fatal(err)
	}
	now, changed, err := c.RefreshHost(ctx, h)
	if err != nil || !changed || now == h || len(now.Queued) != 2 || now.ETag == "" || now.ETag == h.ETag || len(now.Raw) == 0 {
		t.Fatalf("RefreshHost after a submission: %v, changed %v, %d queued, ETag %q (was %q)", err, changed, len(now.Queued), now.ETag, h.ETag)
	}
}

// statusCounter counts the statuses of the answers a client was given.
type statusCounter struct {
	mu       sync.Mutex
	statuses map[int]int
}

func (a *statusCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err == nil {
		a.mu.Lock()
		a.statuses[resp.StatusCode]++
		a.mu.Unlock()
	}
	return resp, err
}

func (a *statusCounter) get(status int) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.statuses[status]
}
