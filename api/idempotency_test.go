package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestIdempotencyKeyIsPerPrincipalREST: bob sending alice's
// Idempotency-Key gets a new order of his own, never hers (her arguments
// and output are hers to read); each principal's retry still returns its
// own first order.
func TestIdempotencyKeyIsPerPrincipalREST(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"idem"}})
	const key = "deploy-42"
	herBody := map[string]any{"host": "idem", "command": "echo", "args": []string{"alice secret"}}
	hisBody := map[string]any{"host": "idem", "command": "echo", "args": []string{"bob's own"}}
	hers := e.submit("alice", herBody, "?wait=20", http.StatusOK, "Idempotency-Key", key)
	if hers.Result == nil || hers.Result.Stdout.Content != "alice secret\n" {
		t.Fatalf("alice's order: %+v", hers)
	}
	his := e.submit("bob", hisBody, "?wait=20", http.StatusOK, "Idempotency-Key", key)
	if his.ID == hers.ID || his.Principal != "bob" || strings.Join(his.Args, " ") != "bob's own" {
		t.Fatalf("bob with alice's key got %s of %s with args %q; want a new order of his own", his.ID, his.Principal, his.Args)
	}
	if his.Result == nil || his.Result.Stdout.Content != "bob's own\n" {
		t.Fatalf("bob's order did not run as his own: %+v", his.Result)
	}
	// Retries map to each principal's own first order.
	for _, c := range []struct {
		as   string
		body map[string]any
		want uuid.UUID
	}{{"alice", herBody, hers.ID}, {"bob", hisBody, his.ID}} {
		again := e.submit(c.as, c.body, "", http.StatusOK, "Idempotency-Key", key)
		if again.ID != c.want {
			t.Errorf("%s's retry returned %s, want %s", c.as, again.ID, c.want)
		}
	}
	// Even alice's very request under her key is a new order of bob's.
	copied := e.submit("bob", herBody, "?wait=20", http.StatusOK, "Idempotency-Key", key+"-copy")
	mine := e.submit("alice", herBody, "?wait=20", http.StatusOK, "Idempotency-Key", key+"-copy")
	if mine.ID == copied.ID || mine.Principal != "alice" || copied.Principal != "bob" {
		t.Fatalf("the same request and key from bob (%s) and alice (%s) share an order", copied.ID, mine.ID)
	}
}

// TestIdempotencyKeyIsPerPrincipalNATS: over NATS, Nats-Msg-Id is the
// idempotency key, and it is per principal too. JetStream deduplicates
// Nats-Msg-Id in the submit stream by itself for a short window (for every
// publisher alike), so bob's submission goes through a second NATS server
// sharing the database, as a publisher whose message the stream did not
// drop would: what is tested is the intake's key, deterministically, not
// the stream's dedup.
func TestIdempotencyKeyIsPerPrincipalNATS(t *testing.T) {
	first := newAPIEnv(t, envOptions{})
	second := newAPIEnv(t, envOptions{dsn: first.dsn, tokens: first.tokens})
	const key = "nats-key-7"
	a := first.publish("alice", "nidem", key, map[string]any{"command": "echo", "args": []string{"alice secret"}})
	if a.Order == nil || a.Order.Principal != "alice" {
		t.Fatalf("alice's answer: %+v", a)
	}
	b := second.publish("bob", "nidem", key, map[string]any{"command": "echo", "args": []string{"bob's own"}})
	if b.Error != nil || b.Order == nil {
		t.Fatalf("bob's answer: %+v", b)
	}
	if b.Order.ID == a.Order.ID || b.Order.Principal != "bob" || strings.Join(b.Order.Args, " ") != "bob's own" {
		t.Fatalf("bob with alice's Nats-Msg-Id got %s of %s with args %q; want a new order of his own",
			b.Order.ID, b.Order.Principal, b.Order.Args)
	}
	// A retry by alice still finds her order (through a third server: the
	// second one's stream may still drop the Nats-Msg-Id it just saw).
	third := newAPIEnv(t, envOptions{dsn: first.dsn, tokens: first.tokens})
	again := third.publish("alice", "nidem", key, map[string]any{"command": "echo", "args": []string{"alice secret"}})
	if again.Order == nil || again.Order.ID != a.Order.ID {
		t.Fatalf("alice's retry: %+v, want order %s", again, a.Order.ID)
	}
	// Neither can read the other's order.
	for _, c := range []struct {
		as string
		id uuid.UUID
	}{{"bob", a.Order.ID}, {"alice", b.Order.ID}} {
		code, body := first.do(c.as, "GET", "/v1/orders/"+c.id.String(), nil)
		wantError(t, code, body, http.StatusNotFound, "not_found")
	}
}

// TestFanOutRetryIsIdempotentPerHost: a fan-out retried with the same
// Idempotency-Key creates one order per host the first time and none the
// second; every host runs its order once, and the retry answers with the
// same batch.
func TestFanOutRetryIsIdempotentPerHost(t *testing.T) {
	hosts := []string{"fan-a", "fan-b", "fan-c"}
	e := newAPIEnv(t, envOptions{hosts: hosts})
	dir := t.TempDir()
	body := map[string]any{"hosts": hosts, "command": "sh",
		"args": []string{"-c", `mktemp "$1/run.XXXXXX"`, "_", dir}}
	code, b := e.do("alice", "POST", "/v1/orders?wait=20", body, "Idempotency-Key", "fan-1")
	if code != http.StatusOK {
		t.Fatalf("fan-out: %d %s", code, b)
	}
	var first api.Batch
	if err := json.Unmarshal(b, &first); err != nil {
		t.Fatal(err)
	}
	if len(first.Orders) != len(hosts) || first.Counts["succeeded"] != len(hosts) {
		t.Fatalf("first fan-out: %s", b)
	}
	seen := map[string]uuid.UUID{}
	for _, o := range first.Orders {
		if prev, dup := seen[o.Host]; dup {
			t.Fatalf("host %s got orders %s and %s", o.Host, prev, o.ID)
		}
		seen[o.Host] = o.ID
	}
	if len(seen) != len(hosts) {
		t.Fatalf("orders for hosts %v, want %v", seen, hosts)
	}

	code, b = e.do("alice", "POST", "/v1/orders?wait=20", body, "Idempotency-Key", "fan-1")
	if code != http.StatusOK {
		t.Fatalf("retried fan-out: %d %s", code, b)
	}
	var again api.Batch
	if err := json.Unmarshal(b, &again); err != nil {
		t.Fatal(err)
	}
	if again.BatchID != first.BatchID {
		t.Errorf("retry answered batch %s, want %s", again.BatchID, first.BatchID)
	}
	var ids, want []string
	for _, o := range again.Orders {
		ids = append(ids, o.Host+"="+o.ID.String())
	}
	for h, id := range seen {
		want = append(want, h+"="+id.String())
	}
	sort.Strings(ids)
	sort.Strings(want)
	if strings.Join(ids, ",") != strings.Join(want, ",") {
		t.Errorf("retry answered orders %v, want %v", ids, want)
	}

	// One order per host in all, each executed exactly once.
	code, b = e.do("admin", "GET", "/v1/orders?limit=100", nil)
	var list api.OrderList
	if code != http.StatusOK || json.Unmarshal(b, &list) != nil {
		t.Fatalf("list: %d %s", code, b)
	}
	if len(list.Orders) != len(hosts) {
		t.Errorf("%d orders after the retry, want %d", len(list.Orders), len(hosts))
	}
	runs, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != len(hosts) {
		t.Errorf("%d executions, want %d", len(runs), len(hosts))
	}

	// A retry that reaches a host the first attempt had not (its API died
	// part-way) puts that host's order in the same batch: the batch the
	// answer names lists every host.
	code, b = e.do("alice", "POST", "/v1/orders", map[string]any{"hosts": []string{"fan-x", "fan-y"}, "command": "true"},
		"Idempotency-Key", "fan-2")
	var part api.Batch
	if code != http.StatusAccepted || json.Unmarshal(b, &part) != nil {
		t.Fatalf("first part: %d %s", code, b)
	}
	code, b = e.do("alice", "POST", "/v1/orders", map[string]any{"hosts": []string{"fan-x", "fan-y", "fan-z"}, "command": "true"},
		"Idempotency-Key", "fan-2")
	var whole api.Batch
	if code != http.StatusAccepted || json.Unmarshal(b, &whole) != nil || whole.BatchID != part.BatchID {
		t.Fatalf("the retry reaching one more host: %d %s (first batch %s)", code, b, part.BatchID)
	}
	code, b = e.do("alice", "GET", "/v1/batches/"+whole.BatchID.String(), nil)
	var listed api.Batch
	if code != http.StatusOK || json.Unmarshal(b, &listed) != nil || len(listed.Orders) != 3 {
		t.Fatalf("the batch after the retry: %d %s", code, b)
	}
}

// TestIdempotentRetryWaits: a retry with the key of an order still
// running, asking to wait (the first request's answer was lost, say its
// API replica died), waits for that order as the first request would
// have, and runs nothing again.
func TestIdempotentRetryWaits(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"idem-w"}})
	body := map[string]any{"host": "idem-w", "command": "sh", "args": []string{"-c", "sleep 1; echo once"}}
	first := e.submit("alice", body, "", http.StatusAccepted, "Idempotency-Key", "lost-answer")
	again := e.submit("alice", body, "?wait=20", http.StatusOK, "Idempotency-Key", "lost-answer")
	if again.ID != first.ID || again.Status != "succeeded" || again.Result == nil || again.Result.Stdout.Content != "once\n" {
		t.Fatalf("the waiting retry: %s %s %+v, want order %s succeeded", again.ID, again.Status, again.Result, first.ID)
	}
}

// TestNATSIntakeRetriesAnUnqueuedOrder: when the intake records a NATS
// submission and then fails to publish it to its host's stream, it does
// not answer and move on (the reconciler would queue the order seconds
// later, behind the publisher's next submission); it takes the same
// submission up again, finds the order by its Nats-Msg-Id and publishes
// it, so the next one runs after it.
func TestNATSIntakeRetriesAnUnqueuedOrder(t *testing.T) {
	failures := new(atomic.Int64)
	e := newAPIEnv(t, envOptions{hosts: []string{"unq"}, publishFailures: failures})
	failures.Store(1)
	first := e.publish("alice", "unq", "unq-first", map[string]any{"command": "true"})
	if first.Error != nil || first.Order == nil {
		t.Fatalf("first submission: %+v", first.Error)
	}
	if n := failures.Load(); n > 0 {
		t.Fatalf("the injected publish failure was not used (%d left)", n)
	}
	second := e.publish("alice", "unq", "unq-second", map[string]any{"command": "true"})
	if second.Error != nil || second.Order == nil {
		t.Fatalf("second submission: %+v", second.Error)
	}
	var seqs [2]int64
	testenv.WaitUntil(t, 20*time.Second, "both orders ran", func() bool {
		err := e.pool.QueryRow(t.Context(), `SELECT
			(SELECT stream_seq FROM orders WHERE id = $1 AND status = 'succeeded'),
			(SELECT stream_seq FROM orders WHERE id = $2 AND status = 'succeeded')`,
			first.Order.ID, second.Order.ID).Scan(&seqs[0], &seqs[1])
		return err == nil
	})
	if seqs[0] >= seqs[1] {
		t.Errorf("the first submission ran from stream position %d, after the second (%d)", seqs[0], seqs[1])
	}
	var n int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM orders WHERE idempotency_key = 'unq-first'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("%d orders for the first submission (%v), want 1", n, err)
	}
}

// TestClientGoneMidSubmit: a client that gives up on a submission while
// the API waits on PostgreSQL (here, a table the insert needs is locked)
// is not a failure of the API: its insert runs to its end (intake.Submit),
// and nothing is logged as an ERROR "request failed" (which, with its 500
// in the metrics, would page someone for a client's timeout). Its retry
// with the same key then gets that one order.
func TestClientGoneMidSubmit(t *testing.T) {
	logs := &testenv.LogBuffer{}
	e := newAPIEnv(t, envOptions{hosts: []string{"gone"},
		logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	tx, err := e.pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(t.Context(), `LOCK TABLE unpublished IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	body := `{"host":"gone","command":"true"}`
	req, err := http.NewRequest("POST", e.url+"/v1/orders", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "gone-1")
	client := &http.Client{Timeout: 500 * time.Millisecond}
	if resp, err := client.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("the submission was answered (%d) while the table was locked", resp.StatusCode)
	}
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, 10*time.Second, "the API is done with the request", func() bool {
		return strings.Contains(logs.String(), "order accepted") || strings.Contains(logs.String(), "request failed")
	})
	if strings.Contains(logs.String(), "request failed") {
		t.Errorf("a client that left was logged as a failed request:\n%s", logs.String())
	}
	first := e.submit("alice", map[string]any{"host": "gone", "command": "true"}, "?wait=10", http.StatusOK, "Idempotency-Key", "gone-1")
	var n int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM orders WHERE idempotency_key = 'gone-1'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("%d orders for the key (%v), want 1", n, err)
	}
	if first.Status != "succeeded" {
		t.Errorf("the retry's order: %s", first.Status)
	}
}

// TestNATSMsgIDRefusedByItsName: a Nats-Msg-Id that cannot be an
// idempotency key is refused under its own name and with the rule the
// REST header has, whatever is wrong with it; a control character was
// refused as an "Idempotency-Key" of "at most 512 bytes".
func TestNATSMsgIDRefusedByItsName(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	for _, id := range []string{strings.Repeat("k", 201), "msg\x01id", "msg\tid"} {
		a := e.publish("alice", "nmsgid", id, map[string]any{"command": "true"})
		if a.Error == nil || a.Error.Code != "invalid_request" || a.Error.Message != "Nats-Msg-Id must be printable text of at most 200 bytes" ||
			a.Error.Details["field"] != "Nats-Msg-Id" {
			t.Errorf("Nats-Msg-Id %q: answer %+v (error %+v)", id, a, a.Error)
		}
	}
}

// TestNATSRetryOfALargeOrderIsAnswered: a NATS retry of an order that
// finished with outputs larger than a NATS message is answered with the
// order, without its result. Answered with the whole order, the publish
// was refused for its size and the publisher heard nothing.
func TestNATSRetryOfALargeOrderIsAnswered(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"nbig"}})
	body := map[string]any{"command": "head", "args": []string{"-c", "2000000", "/dev/zero"}}
	first := e.publish("alice", "nbig", "big-1", body)
	if first.Order == nil {
		t.Fatalf("first answer: %+v (error %+v)", first, first.Error)
	}
	done := e.waitOrder(first.Order.ID, "succeeded")
	if done.Result == nil || done.Result.Stdout.Bytes != 2000000 {
		t.Fatalf("the order's result: %+v", done.Result)
	}
	again := e.publish("alice", "nbig", "big-1", body)
	if again.Order == nil || again.Order.ID != first.Order.ID || again.Order.Status != "succeeded" || again.Order.Result != nil {
		t.Fatalf("the retry's answer: %+v (error %+v)", again.Order, again.Error)
	}
}

// TestFanOutKeyIsNotASingleOrdersKey: a fan-out keys its orders
// "<key>/<host>"; a single order submitted earlier with such a key is not
// that host's order of the fan-out (the fan-out answered with it, in no
// batch, and ran nothing on the host), nor is a fan-out's order the first
// order of a single submission with its key. Both are refused as a key
// reused for another request; the fan-out's other hosts get their orders.
func TestFanOutKeyIsNotASingleOrdersKey(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	body := map[string]any{"host": "col-a", "command": "true"}
	single := e.submit("alice", body, "", http.StatusAccepted, "Idempotency-Key", "deploy/col-a")
	code, b := e.do("alice", "POST", "/v1/orders", map[string]any{"hosts": []string{"col-a", "col-b"}, "command": "true"},
		"Idempotency-Key", "deploy")
	var batch api.Batch
	if code != http.StatusAccepted || json.Unmarshal(b, &batch) != nil {
		t.Fatalf("fan-out: %d %s", code, b)
	}
	if len(batch.Orders) != 1 || batch.Orders[0].Host != "col-b" || len(batch.Refused) != 1 || batch.Refused[0].Host != "col-a" ||
		batch.Refused[0].Error.Code != "idempotency_key_reused" {
		t.Fatalf("fan-out over the single order's key (%s): %s", single.ID, b)
	}
	// The other way round: col-b's order of the fan-out is keyed deploy/col-b.
	code, b = e.do("alice", "POST", "/v1/orders", map[string]any{"host": "col-b", "command": "true"}, "Idempotency-Key", "deploy/col-b")
	wantError(t, code, b, http.StatusUnprocessableEntity, "idempotency_key_reused")
	// A retry of each is still answered with its first order.
	if again := e.submit("alice", body, "", http.StatusAccepted, "Idempotency-Key", "deploy/col-a"); again.ID != single.ID {
		t.Fatalf("single retry answered %s, want %s", again.ID, single.ID)
	}
}

// TestTwoIdempotencyKeysAreRefused: a request with two Idempotency-Key
// headers is refused (400 invalid_request, details.field
// Idempotency-Key) on every route that reads the header, a fan-out's
// and an action run's included, and a NATS submission with two
// Nats-Msg-Id headers likewise. The first key was used silently: a proxy
// or a retrying client that added its own decided which order a retry
// found, and nobody saw both, as with two Authorization headers.
func TestTwoIdempotencyKeysAreRefused(t *testing.T) {
	acts := config.Actions{Bus: "system", Definitions: []config.Action{hashAction}}
	e := newAPIEnv(t, envOptions{actions: acts})
	post := func(path string, body map[string]any, keys ...string) (int, []byte) {
		t.Helper()
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		req, err := http.NewRequestWithContext(testenv.Context(t), http.MethodPost, e.url+path, bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
		req.Header.Set("Content-Type", "application/json")
		for _, k := range keys {
			req.Header.Add("Idempotency-Key", k)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, out
	}
	single := map[string]any{"host": "twokeys", "command": "true"}
	fan := map[string]any{"hosts": []string{"twokeys-a", "twokeys-b"}, "command": "true"}
	act := map[string]any{"host": "act-9", "params": map[string]any{"label": "x", "pw": "s3cretpassw0rd"}}
	for _, c := range []struct {
		path string
		body map[string]any
		keys []string
	}{
		{"/v1/orders", single, []string{"k-1", "k-2"}},
		{"/v1/orders", single, []string{"k-1", "k-1"}},
		{"/v1/orders", fan, []string{"k-1", "k-2"}},
		{"/v1/actions/hash-secret/run", act, []string{"k-1", "k-2"}},
	} {
		code, b := post(c.path, c.body, c.keys...)
		var eb api.ErrorBody
		if code != http.StatusBadRequest || json.Unmarshal(b, &eb) != nil || eb.Error.Code != "invalid_request" ||
			eb.Error.Message != "2 Idempotency-Key headers: send one" || eb.Error.Details["field"] != "Idempotency-Key" {
			t.Errorf("POST %s with Idempotency-Key %q: %d %s", c.path, c.keys, code, b)
		}
	}
	var n int
	if err := e.pool.QueryRow(testenv.Context(t), `SELECT count(*) FROM orders`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("orders recorded from refused requests: %d (%v)", n, err)
	}
	// One header still works, on each route.
	for _, c := range []struct {
		path, key string
		body      map[string]any
	}{{"/v1/orders", "one-single", single}, {"/v1/orders", "one-fan", fan}, {"/v1/actions/hash-secret/run", "one-action", act}} {
		if code, b := post(c.path, c.body, c.key); code != http.StatusAccepted {
			t.Errorf("POST %s with one Idempotency-Key: %d %s", c.path, code, b)
		}
	}

	a := e.publish("alice", "twokeys", "m-1", map[string]any{"command": "true"}, "Nats-Msg-Id", "m-2")
	if a.Error == nil || a.Error.Code != "invalid_request" || a.Error.Message != "2 Nats-Msg-Id headers: send one" ||
		a.Error.Details["field"] != "Nats-Msg-Id" {
		t.Fatalf("a NATS submission with two Nats-Msg-Id headers: %+v (error %+v)", a, a.Error)
	}
	if b := e.publish("alice", "twokeys", "m-3", map[string]any{"command": "true"}); b.Order == nil {
		t.Fatalf("a submission with one: %+v (error %+v)", b, b.Error)
	}
}

// TestIdempotencyKeyRecordedBeforeTheUpgrade: a key recorded by a
// binary that stored order.Fingerprint (the order as the server filled
// it in) is still answered with its order when the same request comes
// again after the upgrade to RequestSum, and another request under it is
// still refused: the stored sum is compared in its own form.
func TestIdempotencyKeyRecordedBeforeTheUpgrade(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	body := map[string]any{"host": "upg", "command": "echo", "args": []string{"once"}}
	first := e.submit("alice", body, "", http.StatusAccepted, "Idempotency-Key", "before-upgrade")
	stored, err := e.store.GetOrder(t.Context(), first.ID)
	if err != nil {
		t.Fatal(err)
	}
	// What the earlier binary stored: the order's Fingerprint, with the
	// default timeout it filled in.
	if stored.Timeout == 0 {
		t.Fatal("the stored order has no timeout filled in")
	}
	if _, err := e.pool.Exec(t.Context(), `UPDATE orders SET request_sha256 = $1 WHERE id = $2`, stored.Fingerprint(), first.ID); err != nil {
		t.Fatal(err)
	}
	if again := e.submit("alice", body, "", http.StatusAccepted, "Idempotency-Key", "before-upgrade"); again.ID != first.ID {
		t.Fatalf("retry after the upgrade answered %s, want %s", again.ID, first.ID)
	}
	other := map[string]any{"host": "upg", "command": "echo", "args": []string{"twice"}}
	code, b := e.do("alice", "POST", "/v1/orders", other, "Idempotency-Key", "before-upgrade")
	wantError(t, code, b, http.StatusUnprocessableEntity, "idempotency_key_reused")
}

// TestEmptyIdempotencyKeyIsRefused: an Idempotency-Key header sent empty
// (a client whose key variable came out empty) is 400 invalid_request
// naming the header, on every route that reads it, and so is an empty
// Nats-Msg-Id: taken as no key, as they were, the client's retry ran
// the order again although it had asked for one run.
func TestEmptyIdempotencyKeyIsRefused(t *testing.T) {
	acts := config.Actions{Bus: "system", Definitions: []config.Action{hashAction}}
	e := newAPIEnv(t, envOptions{actions: acts})
	single := map[string]any{"host": "emptykey", "command": "true"}
	fan := map[string]any{"hosts": []string{"emptykey-a", "emptykey-b"}, "command": "true"}
	act := map[string]any{"host": "act-9", "params": map[string]any{"label": "x", "pw": "s3cretpassw0rd"}}
	for _, c := range []struct {
		path string
		body map[string]any
	}{{"/v1/orders", single}, {"/v1/orders", fan}, {"/v1/actions/hash-secret/run", act}} {
		code, b := e.do("alice", "POST", c.path, c.body, "Idempotency-Key", "")
		var eb api.ErrorBody
		if code != http.StatusBadRequest || json.Unmarshal(b, &eb) != nil || eb.Error.Code != "invalid_request" ||
			eb.Error.Details["field"] != "Idempotency-Key" {
			t.Errorf("POST %s with an empty Idempotency-Key: %d %s", c.path, code, b)
		}
	}
	a := e.publish("alice", "emptykey", "", map[string]any{"command": "true"}, "Nats-Msg-Id", "")
	if a.Error == nil || a.Error.Code != "invalid_request" || a.Error.Details["field"] != "Nats-Msg-Id" {
		t.Fatalf("a NATS submission with an empty Nats-Msg-Id: %+v (error %+v)", a, a.Error)
	}
	var n int
	if err := e.pool.QueryRow(testenv.Context(t), `SELECT count(*) FROM orders`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("orders recorded from refused requests: %d (%v)", n, err)
	}
}

// TestIdempotencyKeyLivesAsLongAsItsOrder: a retry after the order
// finished is that order; once retention deleted the order, the key is
// free and the same request is a new order (openapi.yaml says so).
func TestIdempotencyKeyLivesAsLongAsItsOrder(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	body := map[string]any{"host": "kept", "command": "true"}
	first := e.submit("alice", body, "", http.StatusAccepted, "Idempotency-Key", "kept-1")
	if code, b := e.do("alice", "POST", "/v1/orders/"+first.ID.String()+"/cancel", nil); code >= 300 {
		t.Fatalf("cancel: %d %s", code, b)
	}
	if again := e.submit("alice", body, "", http.StatusOK, "Idempotency-Key", "kept-1"); again.ID != first.ID || again.Status != "canceled" {
		t.Fatalf("retry after the order ended: %s %s, want %s canceled", again.ID, again.Status, first.ID)
	}
	if n, err := e.store.DeleteFinishedBefore(t.Context(), time.Now().Add(time.Hour), 1000); err != nil || n != 1 {
		t.Fatalf("retention deleted %d orders (%v), want 1", n, err)
	}
	if fresh := e.submit("alice", body, "", http.StatusAccepted, "Idempotency-Key", "kept-1"); fresh.ID == first.ID {
		t.Fatal("a retry after retention deleted the order answered with it")
	}
}
