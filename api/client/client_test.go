package client_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/api/client"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

func newClient(t *testing.T, s *server, as string) *client.Client {
	t.Helper()
	c, err := client.New(s.url, s.tokens[as])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wantCode checks that err is the API's refusal with code and status.
func wantCode(t *testing.T, err error, code client.Code, status int) {
	t.Helper()
	var e *client.Error
	if !errors.As(err, &e) || e.Code != code || e.Status != status || client.ErrorCode(err) != code {
		t.Fatalf("error = %v (%T), want %s with status %d", err, err, code, status)
	}
}

func TestClientOrders(t *testing.T) {
	s := newServer(t, "web-1")
	c := newClient(t, s, "alice")
	ctx := testenv.Context(t)

	if _, err := client.New("127.0.0.1:8080", "x"); err == nil {
		t.Fatal("New accepts a URL without a scheme")
	}

	// Submit and wait: the API answers with the finished order.
	sub, err := c.Submit(ctx, client.SubmitRequest{Host: "web-1", Command: "cat", Stdin: client.EncodeStdin([]byte("\x00hi\n"), "base85"),
		Stdout: &client.StreamOut{Encode: ptr("base64")}}, client.SubmitOptions{Wait: 20 * time.Second, IdempotencyKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	if !sub.Finished || sub.Order == nil || sub.Order.Status != client.StatusSucceeded || len(sub.Raw) == 0 || sub.Replayed {
		t.Fatalf("submit with wait: %+v", sub)
	}
	oldest := sub.Order.ID.String()
	if out, err := sub.Order.Result.Stdout.Decode(); err != nil || string(out) != "\x00hi\n" {
		t.Fatalf("stdout %q, %v", out, err)
	}
	again, err := c.Submit(ctx, client.SubmitRequest{Host: "web-1", Command: "cat", Stdin: client.EncodeStdin([]byte("\x00hi\n"), "base85"),
		Stdout: &client.StreamOut{Encode: ptr("base64")}}, client.SubmitOptions{IdempotencyKey: "k1"})
	if err != nil || again.Order.ID != sub.Order.ID || !again.Replayed {
		t.Fatalf("a retry with the same Idempotency-Key: %v, %+v (Replayed says it was one)", err, again)
	}
	_, err = c.Submit(ctx, client.SubmitRequest{Host: "web-1", Command: "true"}, client.SubmitOptions{IdempotencyKey: "k1"})
	wantCode(t, err, client.CodeIdempotencyReused, http.StatusUnprocessableEntity)

	// Queued (no worker for "offline") and canceled; a finished one is a conflict.
	sub, err = c.Submit(ctx, client.SubmitRequest{Host: "offline", Command: "true"}, client.SubmitOptions{})
	if err != nil || sub.Finished || sub.Order.Status != client.StatusQueued {
		t.Fatalf("submit: %v %+v", err, sub)
	}
	o, err := c.Cancel(ctx, sub.Order.ID.String(), "")
	if err != nil || o.Status != client.StatusCanceled || o.Cancel == nil || o.Cancel.Actor != "alice" {
		t.Fatalf("cancel: %v %+v", err, o)
	}
	_, err = c.Cancel(ctx, oldest, "SIGKILL") // finished
	wantCode(t, err, client.CodeConflict, http.StatusConflict)
	_, err = c.Cancel(ctx, sub.Order.ID.String(), "SIGWINCH")
	wantCode(t, err, client.CodeInvalid, http.StatusBadRequest)

	// Refusals carry the stable code.
	_, err = c.Get(ctx, "0193a5c4-8a9e-7c1e-9f3a-2b6d4e8f0a1c")
	wantCode(t, err, client.CodeNotFound, http.StatusNotFound)
	_, err = newClient(t, s, "bob").Get(ctx, o.ID.String()) // not bob's
	wantCode(t, err, client.CodeNotFound, http.StatusNotFound)
	bad, _ := client.New(s.url, "ord_wrong")
	_, err = bad.Hosts(ctx)
	wantCode(t, err, client.CodeUnauthenticated, http.StatusUnauthorized)
	_, err = c.Submit(ctx, client.SubmitRequest{Host: "no such host!", Command: "true"}, client.SubmitOptions{})
	wantCode(t, err, client.CodeInvalid, http.StatusBadRequest)
	down, _ := client.New("http://127.0.0.1:1", "x")
	_, err = down.Hosts(ctx)
	var te *client.TransportError
	if !errors.As(err, &te) || !client.Temporary(err) {
		t.Fatalf("an API that is down: %v", err)
	}

	// The iterator reads every page; List reads one.
	for i := 0; i < 4; i++ {
		if _, err := c.Submit(ctx, client.SubmitRequest{Host: "offline", Command: "true"}, client.SubmitOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	for o, err := range c.Orders(ctx, client.ListOptions{Limit: 2}) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, o.ID.String())
	}
	if len(ids) != 6 || ids[len(ids)-1] != oldest {
		t.Fatalf("Orders yields %d orders %v; want 6, oldest last", len(ids), ids)
	}
	n := 0
	for range c.Orders(ctx, client.ListOptions{Limit: 2}) {
		if n++; n == 3 {
			break
		}
	}
	page, err := c.List(ctx, client.ListOptions{Host: "offline", Status: []client.Status{client.StatusQueued}, Limit: 3})
	if err != nil || len(page.Orders) != 3 || page.NextCursor == nil {
		t.Fatalf("List: %v %+v", err, page)
	}
	// Without outputs: the same orders with the same sizes and hashes, and
	// no content.
	full, err := c.List(ctx, client.ListOptions{Host: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	bare, err := c.List(ctx, client.ListOptions{Host: "web-1", WithoutOutputs: true})
	if err != nil || len(bare.Orders) != len(full.Orders) || bytes.Contains(bare.Raw, []byte(`"content"`)) {
		t.Fatalf("List without outputs: %v %s", err, bare.Raw)
	}
	contents := 0
	for i, f := range full.Orders {
		b := bare.Orders[i]
		if b.ID != f.ID || (b.Result == nil) != (f.Result == nil) {
			t.Fatalf("List without outputs: order %d is %s, want %s", i, b.ID, f.ID)
		}
		if f.Result == nil {
			continue
		}
		for _, st := range [][2]client.Stream{{f.Result.Stdout, b.Result.Stdout}, {f.Result.Stderr, b.Result.Stderr}} {
			if st[1].Content != "" || st[1].Bytes != st[0].Bytes || st[1].SHA256 != st[0].SHA256 || st[1].Truncated != st[0].Truncated {
				t.Fatalf("order %s without outputs: %+v, full %+v", f.ID, st[1], st[0])
			}
			if st[0].Content != "" {
				contents++
			}
		}
	}
	if contents == 0 {
		t.Fatalf("no listed order has output: %s", full.Raw)
	}
	for o, err := range c.Orders(ctx, client.ListOptions{Status: []client.Status{"bogus"}}) {
		if o != nil {
			t.Fatalf("an invalid filter yields an order")
		}
		wantCode(t, err, client.CodeInvalid, http.StatusBadRequest)
	}

	// Hosts, one host, a fan-out and its batch.
	hosts, err := c.Hosts(ctx)
	if err != nil || len(hosts.Hosts) == 0 {
		t.Fatalf("Hosts: %v %+v", err, hosts)
	}
	h, err := c.Host(ctx, "offline")
	if err != nil || h.QueueDepth == nil || *h.QueueDepth != 4 || len(h.Queued) != 4 {
		t.Fatalf("Host: %v %+v", err, h)
	}
	sub, err = c.Submit(ctx, client.SubmitRequest{Hosts: []string{"web-1", "offline"}, Command: "true"}, client.SubmitOptions{})
	if err != nil || sub.Batch == nil || len(sub.Batch.Orders) != 2 {
		t.Fatalf("fan-out: %v %+v", err, sub)
	}
	b, err := c.Batch(ctx, sub.Batch.BatchID.String())
	if err != nil || b.BatchID != sub.Batch.BatchID || len(b.Orders) != 2 {
		t.Fatalf("Batch: %v %+v", err, b)
	}
}

func TestClientFollow(t *testing.T) {
	s := newServer(t, "web-1")
	c := newClient(t, s, "alice")
	ctx := testenv.Context(t)

	gate := filepath.Join(t.TempDir(), "gate")
	sub, err := c.Submit(ctx, client.SubmitRequest{Host: "web-1", Command: "sh",
		Args: []string{"-c", `echo one; while [ ! -e "$1" ]; do sleep 0.02; done; printf '\377two\n'; echo err >&2; exit 3`, "_", gate}},
		client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Resume after the first chunk, while the order runs (its chunks
	// leave the live stream once its result is stored): only what
	// followed is written.
	first := firstChunkID(t, s, sub.Order.ID.String())
	var resumedOut, resumedErr bytes.Buffer
	resumed := make(chan error, 1)
	go func() {
		_, err := c.Follow(ctx, sub.Order.ID.String(), client.FollowOptions{Stdout: &resumedOut, Stderr: &resumedErr, LastEventID: first})
		resumed <- err
	}()
	// The order goes on only once the resumed follower reads the live
	// stream (its consumer starts after the first chunk): once the result
	// is stored, the chunks leave it.
	waitResumedConsumer(t, s, first)
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	var seen []client.Status
	final, err := c.Follow(ctx, sub.Order.ID.String(), client.FollowOptions{Stdout: &stdout, Stderr: &stderr,
		OnStatus: func(s client.Status) { seen = append(seen, s) }})
	if err != nil {
		t.Fatal(err)
	}
	if final.Status != client.StatusFailed || *final.Result.ExitCode != 3 || stdout.String() != "one\n\xfftwo\n" || stderr.String() != "err\n" {
		t.Fatalf("Follow: %s exit %v, stdout %q stderr %q", final.Status, final.Result.ExitCode, stdout.String(), stderr.String())
	}
	if len(seen) == 0 || seen[0] != client.StatusQueued {
		t.Fatalf("statuses seen: %v", seen)
	}

	if err := <-resumed; err != nil {
		t.Fatal(err)
	}
	if resumedOut.String() != "\xfftwo\n" || resumedErr.String() != "err\n" {
		t.Fatalf("resumed after event %s: stdout %q stderr %q", first, resumedOut.String(), resumedErr.String())
	}
	// Finished: the output comes from the stored result, once.
	stdout.Reset()
	stderr.Reset()
	if _, err := c.Follow(ctx, sub.Order.ID.String(), client.FollowOptions{Stdout: &stdout, Stderr: &stderr}); err != nil {
		t.Fatal(err)
	}
	if stdout.String() != "one\n\xfftwo\n" || stderr.String() != "err\n" {
		t.Fatalf("Follow of the finished order: stdout %q stderr %q", stdout.String(), stderr.String())
	}

	_, err = c.Follow(ctx, "0193a5c4-8a9e-7c1e-9f3a-2b6d4e8f0a1c", client.FollowOptions{})
	wantCode(t, err, client.CodeNotFound, http.StatusNotFound)
}

// waitResumedConsumer waits until the live stream has a consumer that
// starts after event id first: an SSE follower resumed from it.
func waitResumedConsumer(t *testing.T, s *server, first string) {
	t.Helper()
	after, err := strconv.ParseUint(first, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Context(t)
	live, err := s.q.JetStream().Stream(ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, 30*time.Second, "the resumed follower's consumer", func() bool {
		l := live.ListConsumers(ctx)
		found := false
		for info := range l.Info() {
			if info.Config.OptStartSeq == after+1 {
				found = true
			}
		}
		return l.Err() == nil && found
	})
}

// firstChunkID reads the order's event stream and returns the id of its
// first stdout event.
func firstChunkID(t *testing.T, s *server, id string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(testenv.Context(t), "GET", s.url+"/v1/orders/"+id+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.tokens["alice"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	last := ""
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "id: "); ok {
			last = v
		}
		if line == "event: stdout" {
			return last
		}
	}
	t.Fatal("no stdout event")
	return ""
}

func ptr[T any](v T) *T { return &v }

func TestClientRunbooksAndActions(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s, "alice")
	ctx := testenv.Context(t)

	rbs, err := c.Runbooks(ctx)
	if err != nil || len(rbs) != 1 || rbs[0].File != "Deploy.md" || !rbs[0].Valid {
		t.Fatalf("Runbooks: %v %+v", err, rbs)
	}
	o, err := c.ExecuteRunbook(ctx, "Deploy.md", client.RunbookRequest{Host: "offline", EnvVars: map[string]any{"VERSION": "1.2"}}, client.SubmitOptions{})
	if err != nil || o.Kind != "script" || o.Runbook != "Deploy.md" || o.Status != client.StatusQueued {
		t.Fatalf("ExecuteRunbook: %v %+v", err, o)
	}
	_, err = c.ExecuteRunbook(ctx, "Deploy.md", client.RunbookRequest{Host: "offline"}, client.SubmitOptions{})
	wantCode(t, err, client.CodeUnprocessable, http.StatusUnprocessableEntity) // VERSION is required
	_, err = c.ExecuteRunbook(ctx, "Nope.md", client.RunbookRequest{}, client.SubmitOptions{})
	wantCode(t, err, client.CodeNotFound, http.StatusNotFound)
	// The key is sent: a retry is the first run, another request under
	// it is refused, and one run is recorded.
	req := client.RunbookRequest{Host: "offline", EnvVars: map[string]any{"VERSION": "1.3"}}
	keyed, err := c.ExecuteRunbook(ctx, "Deploy.md", req, client.SubmitOptions{IdempotencyKey: "deploy-1.3"})
	if err != nil || keyed.Status != client.StatusQueued || keyed.Replayed {
		t.Fatalf("ExecuteRunbook with a key: %v %+v", err, keyed)
	}
	again, err := c.ExecuteRunbook(ctx, "Deploy.md", req, client.SubmitOptions{IdempotencyKey: "deploy-1.3"})
	if err != nil || again.ID != keyed.ID || !again.Replayed {
		t.Fatalf("a retry with the same key: %v %+v, want order %s marked Replayed", err, again, keyed.ID)
	}
	req.EnvVars["VERSION"] = "1.4"
	_, err = c.ExecuteRunbook(ctx, "Deploy.md", req, client.SubmitOptions{IdempotencyKey: "deploy-1.3"})
	wantCode(t, err, client.CodeIdempotencyReused, http.StatusUnprocessableEntity)
	if l, err := c.List(ctx, client.ListOptions{Host: "offline"}); err != nil || len(l.Orders) != 2 {
		t.Fatalf("orders after the keyed executes: %v %d, want 2", err, len(l.Orders))
	}

	acts, err := c.Actions(ctx)
	if err != nil || len(acts) != 1 || acts[0].Name != "count" || len(acts[0].Params) != 1 {
		t.Fatalf("Actions: %v %+v", err, acts)
	}
	o, err = c.RunAction(ctx, "count", "offline", map[string]any{"n": 3}, client.SubmitOptions{IdempotencyKey: "count-3"})
	if err != nil || o.Kind != "action" || o.Action == nil || o.Action.Params["n"] != "3" || o.Replayed {
		t.Fatalf("RunAction: %v %+v", err, o)
	}
	if again, err := c.RunAction(ctx, "count", "offline", map[string]any{"n": 3}, client.SubmitOptions{IdempotencyKey: "count-3"}); err != nil ||
		again.ID != o.ID || !again.Replayed {
		t.Fatalf("RunAction retried with its key: %v %+v, want order %s marked Replayed", err, again, o.ID)
	}
	_, err = c.RunAction(ctx, "count", "offline", map[string]any{"n": "three"}, client.SubmitOptions{})
	wantCode(t, err, client.CodeUnprocessable, http.StatusUnprocessableEntity)

	// Bound to the definition read: its ETag runs, another tag does not.
	a, etag, err := c.Action(ctx, "count")
	if err != nil || a.Name != "count" || etag == "" {
		t.Fatalf("Action: %v %+v %q", err, a, etag)
	}
	if _, err := c.RunAction(ctx, "count", "offline", map[string]any{"n": 1}, client.SubmitOptions{IfMatch: etag}); err != nil {
		t.Fatalf("RunAction naming the action's ETag: %v", err)
	}
	_, err = c.RunAction(ctx, "count", "offline", map[string]any{"n": 1}, client.SubmitOptions{IfMatch: `"0000"`})
	wantCode(t, err, client.CodePreconditionFailed, http.StatusPreconditionFailed)
	rb, etag, err := c.Runbook(ctx, "Deploy.md")
	if err != nil || rb.File != "Deploy.md" || etag == "" {
		t.Fatalf("Runbook: %v %+v %q", err, rb, etag)
	}
	req = client.RunbookRequest{Host: "offline", EnvVars: map[string]any{"VERSION": "2"}}
	if _, err := c.ExecuteRunbook(ctx, "Deploy.md", req, client.SubmitOptions{IfMatch: etag}); err != nil {
		t.Fatalf("ExecuteRunbook naming the runbook's ETag: %v", err)
	}
	_, err = c.ExecuteRunbook(ctx, "Deploy.md", req, client.SubmitOptions{IfMatch: `"0000"`})
	wantCode(t, err, client.CodePreconditionFailed, http.StatusPreconditionFailed)
}

// TestClientFollowAcrossALostLiveStream: the live stream is a memory
// stream, lost when its NATS server restarts, and its sequences (the SSE
// event ids) then start again at 1. A follower in the middle of an order
// must neither write the new stream's chunks as if they followed the old
// ones nor repeat any: what it writes is the order's output, byte for
// byte (the stored copy fills what the stream lost).
func TestClientFollowAcrossALostLiveStream(t *testing.T) {
	s := newServer(t, "web-1")
	c := newClient(t, s, "alice")
	ctx := testenv.Context(t)
	gate := filepath.Join(t.TempDir(), "gate")
	// One chunk per line (the sleeps): the old stream's last id is well
	// past the first ids of the new one.
	script := `for i in $(seq 1 30); do echo "a$i"; sleep 0.01; done; while [ ! -e "$1" ]; do sleep 0.02; done; ` +
		`for i in $(seq 1 150); do echo "b$i"; sleep 0.01; done`
	sub, err := c.Submit(ctx, client.SubmitRequest{Host: "web-1", Command: "sh", Args: []string{"-c", script, "_", gate}}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out testenv.LogBuffer
	done := make(chan error, 1)
	go func() {
		_, err := c.Follow(ctx, sub.Order.ID.String(), client.FollowOptions{Stdout: &out})
		done <- err
	}()
	testenv.WaitUntil(t, 30*time.Second, "the first part followed", func() bool { return strings.Contains(out.String(), "a30\n") })

	// What a NATS restart does to the live stream: gone, then made again
	// with its sequences from 1.
	js := s.q.JetStream()
	live, err := js.Stream(ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := live.CachedInfo().Config
	if err := js.DeleteStream(ctx, queue.LiveStream); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for i := 1; i <= 30; i++ {
		want.WriteString("a" + strconv.Itoa(i) + "\n")
	}
	for i := 1; i <= 150; i++ {
		want.WriteString("b" + strconv.Itoa(i) + "\n")
	}
	if out.String() != want.String() {
		t.Fatalf("followed output across the lost stream:\n%s\nwant:\n%s", out.String(), want.String())
	}
}

// TestClientWaitOutlastsTheAnswerTimeout: a submission asking the API to
// wait is answered when the order ends, even past the timeout that
// otherwise catches a silent API (2 minutes; 1 s here).
func TestClientWaitOutlastsTheAnswerTimeout(t *testing.T) {
	defer client.SetResponseHeaderTimeout(time.Second)()
	s := newServer(t, "web-1")
	c := newClient(t, s, "alice")
	sub, err := c.Submit(testenv.Context(t), client.SubmitRequest{Host: "web-1", Command: "sleep", Args: []string{"2"}},
		client.SubmitOptions{Wait: 20 * time.Second})
	if err != nil {
		t.Fatalf("a wait past the answer timeout: %v", err)
	}
	if sub.Order.Status != client.StatusSucceeded {
		t.Fatalf("the waited order: %s", sub.Order.Status)
	}
}

// TestClientFollowPollsWhenStreamsAreUsedUp: a principal that holds as
// many event streams as the API allows still follows its order to the
// end (by polling), instead of failing after the order was submitted.
func TestClientFollowPollsWhenStreamsAreUsedUp(t *testing.T) {
	s := newServerWith(t, api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second, MaxStreams: 1}, "web-1")
	c := newClient(t, s, "alice")
	ctx := testenv.Context(t)
	// The one stream alice may hold: an order of a host no worker serves.
	held, err := c.Submit(ctx, client.SubmitRequest{Host: "web-9", Command: "true"}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, "GET", s.url+"/v1/orders/"+held.Order.ID.String()+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.tokens["alice"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the held stream: %s", resp.Status)
	}

	sub, err := c.Submit(ctx, client.SubmitRequest{Host: "web-1", Command: "sh", Args: []string{"-c", "echo out; echo err >&2"}}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	final, err := c.Follow(ctx, sub.Order.ID.String(), client.FollowOptions{Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		t.Fatalf("Follow with every stream in use: %v", err)
	}
	if final.Status != client.StatusSucceeded || stdout.String() != "out\n" || stderr.String() != "err\n" {
		t.Fatalf("Follow: %s, stdout %q stderr %q", final.Status, stdout.String(), stderr.String())
	}
}

// TestClientSubmitWaitEndsBeforeItsContext: a submission that asks to
// wait longer than its context allows is answered, with the order still
// running, before the context ends. It asked the API for the whole wait
// and lost the answer (and the order's id) at the deadline, while the
// order ran on.
func TestClientSubmitWaitEndsBeforeItsContext(t *testing.T) {
	s := newServer(t, "web-1")
	c := newClient(t, s, "alice")
	ctx, cancel := context.WithTimeout(testenv.Context(t), 3*time.Second)
	defer cancel()
	sub, err := c.Submit(ctx, client.SubmitRequest{Host: "web-1", Command: "sleep", Args: []string{"10"}},
		client.SubmitOptions{Wait: 20 * time.Second})
	if err != nil {
		t.Fatalf("a wait longer than the context: %v", err)
	}
	if sub.Finished || sub.Order.Status.Terminal() {
		t.Fatalf("the order: %s, finished %v", sub.Order.Status, sub.Finished)
	}
	if _, err := c.Cancel(testenv.Context(t), sub.Order.ID.String(), "SIGKILL"); err != nil {
		t.Fatal(err)
	}
}

// TestClientFollowPastTheCap: live output stops at the order's output
// cap, and the stored copy keeps its head and tail. A follower writes the
// rest from the tail after what it streamed: all of it when the tail
// reaches back to what was written (nothing missed), else the stored
// copy's truncation marker for the bytes neither holds, then the tail.
// It wrote the head and said the rest was missed: the end of a long
// command's output, the part that says how it ended, never showed.
func TestClientFollowPastTheCap(t *testing.T) {
	s := newServer(t, "web-1")
	c := newClient(t, s, "alice")
	ctx := testenv.Context(t)
	const limit = 4000
	for _, tc := range []struct {
		name   string
		lines  int // of 100 bytes
		missed int64
	}{
		{"tail_reaches_back", 50, 0},               // 5,000 bytes: the tail is the last 2,000, 4,000 streamed
		{"bytes_between", 80, 8000 - 2000 - limit}, // 8,000 bytes: 4,000 streamed, 2,000 neither kept nor streamed
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The command prints once the follower has seen it start, so
			// that the output is streamed, not only read at the end.
			gate := filepath.Join(t.TempDir(), "gate")
			script := `while [ ! -e "$2" ]; do sleep 0.02; done; i=0; while [ $i -lt "$1" ]; do i=$((i+1)); printf '%05d %093d\n' $i $i; done`
			sub, err := c.Submit(ctx, client.SubmitRequest{Host: "web-1", Command: "sh", MaxOutputBytes: limit,
				Args: []string{"-c", script, "_", strconv.Itoa(tc.lines), gate}}, client.SubmitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			var missed int64
			o, err := c.Follow(ctx, sub.Order.ID.String(), client.FollowOptions{Stdout: &out,
				OnMissed: func(stream string, n int64) { missed += n },
				OnStatus: func(s client.Status) {
					if s == client.StatusRunning {
						if err := os.WriteFile(gate, nil, 0o644); err != nil {
							t.Error(err)
						}
					}
				}})
			if err != nil {
				t.Fatal(err)
			}
			var full strings.Builder
			for i := 1; i <= tc.lines; i++ {
				fmt.Fprintf(&full, "%05d %093d\n", i, i)
			}
			want := full.String()
			if tc.missed > 0 {
				want = want[:limit] + fmt.Sprintf("\n…[orderly: %d bytes omitted]…\n", tc.missed) + want[limit+int(tc.missed):]
			}
			if !o.Result.Stdout.Truncated {
				t.Fatalf("the stored stdout is not truncated: %d bytes", o.Result.Stdout.Bytes)
			}
			if got := out.String(); got != want {
				t.Errorf("followed %d bytes:\n%.300q\n…\n%.300q\nwant %d bytes:\n%.300q\n…\n%.300q", len(got), got, got[max(0, len(got)-300):],
					len(want), want, want[len(want)-300:])
			}
			if missed != tc.missed {
				t.Errorf("OnMissed told %d bytes, want %d", missed, tc.missed)
			}
		})
	}
}
