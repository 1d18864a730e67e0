package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
)

func TestSubmitWaitGetList(t *testing.T) {
	s := newStack(t, "h1")
	o := s.submit(map[string]any{"host": "h1", "command": "echo", "args": []string{"hello", "world"},
		"env": map[string]string{"GREETING": "secret-value"}}, "?wait=20", http.StatusOK)
	if o.Status != "succeeded" || o.Result == nil || o.Result.Stdout.Content != "hello world\n" || *o.Result.ExitCode != 0 {
		t.Fatalf("order = %+v", o)
	}
	if o.Attempt != 1 || o.Principal != "admin" || o.Policy.Decision != "allow" || len(o.Policy.Matched) == 0 {
		t.Fatalf("order metadata = %+v", o)
	}
	if len(o.EnvNames) != 1 || o.EnvNames[0] != "GREETING" {
		t.Fatalf("env names = %v", o.EnvNames)
	}
	// The env value is never stored once the order is finished.
	var leaked int
	if err := s.b.pool.QueryRow(ctxT(t), `SELECT count(*) FROM orders WHERE env::text LIKE '%secret-value%'`).Scan(&leaked); err != nil || leaked != 0 {
		t.Fatalf("env value still stored: %d %v", leaked, err)
	}

	// Prefer: wait=N works like ?wait=N.
	code, b := s.do("POST", "/v1/orders", map[string]any{"host": "h1", "command": "false"}, "Prefer", "wait=20")
	if code != http.StatusOK || !strings.Contains(string(b), `"status":"failed"`) {
		t.Fatalf("Prefer wait: %d %s", code, b)
	}

	// Without wait: 202 with a queued order, then it finishes.
	q := s.submit(map[string]any{"host": "h1", "command": "true"}, "", http.StatusAccepted)
	if q.Status != "queued" {
		t.Fatalf("status = %s, want queued", q.Status)
	}
	got := s.waitFor(q.ID, 20*time.Second, terminal)
	if got.Status != "succeeded" || got.StreamSeq == 0 {
		t.Fatalf("order = %+v", got)
	}

	// A wait shorter than the command answers 202 with the running order.
	slow := s.submit(map[string]any{"host": "h1", "command": "sleep", "args": []string{"2"}}, "?wait=0.2", http.StatusAccepted)
	if slow.Status != "queued" && slow.Status != "running" {
		t.Fatalf("slow status = %s", slow.Status)
	}
	s.waitFor(slow.ID, 20*time.Second, terminal)

	// List: newest first, filters, keyset pagination.
	var ids []uuid.UUID
	for range 5 {
		ids = append(ids, s.submit(map[string]any{"host": "h2", "command": "true"}, "", http.StatusAccepted).ID)
	}
	var seen []uuid.UUID
	cursor := ""
	for page := 0; ; page++ {
		code, b := s.do("GET", "/v1/orders?host=h2&limit=2"+cursor, nil)
		if code != 200 {
			t.Fatalf("list: %d %s", code, b)
		}
		var l api.OrderList
		if err := json.Unmarshal(b, &l); err != nil {
			t.Fatal(err)
		}
		for _, o := range l.Orders {
			seen = append(seen, o.ID)
		}
		if l.NextCursor == nil {
			break
		}
		cursor = "&cursor=" + *l.NextCursor
		if page > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if len(seen) != 5 {
		t.Fatalf("listed %d orders, want 5", len(seen))
	}
	for i := range seen {
		if seen[i] != ids[len(ids)-1-i] {
			t.Fatalf("list order: got %v, want newest first %v", seen, ids)
		}
	}
	code, b = s.do("GET", "/v1/orders?status=failed", nil)
	if code != 200 || strings.Count(string(b), `"status":"failed"`) != 1 {
		t.Fatalf("status filter: %d %s", code, b)
	}
	since := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	code, b = s.do("GET", "/v1/orders?since="+since, nil)
	if code != 200 || !strings.Contains(string(b), `"orders":[]`) {
		t.Fatalf("since filter: %d %s", code, b)
	}

	// Published orders lose their unpublished mark (in batches), so the
	// reconciler leaves them alone.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var marks int
		if err := s.b.pool.QueryRow(ctxT(t), `SELECT count(*) FROM unpublished`).Scan(&marks); err != nil {
			t.Fatal(err)
		}
		if marks == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d published orders still marked unpublished", marks)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// History: every state change is an event.
	var types []string
	rows, err := s.b.pool.Query(ctxT(t), `SELECT type FROM order_events WHERE order_id = $1 ORDER BY id`, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var ty string
		_ = rows.Scan(&ty)
		types = append(types, ty)
	}
	if strings.Join(types, ",") != "submitted,started,finished" {
		t.Fatalf("events = %v", types)
	}
}

func TestErrorsUseTheEnvelope(t *testing.T) {
	s := newStack(t)
	// No token, bad token.
	req, _ := http.NewRequest("GET", s.url+"/v1/orders", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var e api.ErrorBody
	_ = json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != 401 || e.Error.Code != "unauthenticated" {
		t.Fatalf("no token: %d %+v", resp.StatusCode, e)
	}
	code, b := s.do("GET", "/v1/orders", nil, "Authorization", "Bearer ord_wrong")
	wantError(t, code, b, 401, "unauthenticated")

	cases := []struct {
		name   string
		body   any
		hdr    []string
		status int
		code   string
	}{
		{"bad json", `{"host":`, nil, 400, "invalid_request"},
		{"not an object", `[1,2]`, nil, 400, "invalid_request"},
		{"unknown field", `{"host":"h1","command":"true","shell":true}`, nil, 400, "invalid_request"},
		{"wrong type", `{"host":"h1","command":"true","args":"-la"}`, nil, 400, "invalid_request"},
		{"duplicate key", `{"host":"h1","command":"true","command":"rm"}`, nil, 400, "invalid_request"},
		{"trailing data", `{"host":"h1","command":"true"} {}`, nil, 400, "invalid_request"},
		{"deep nesting", `{"env":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, nil, 400, "invalid_request"},
		{"no command", `{"host":"h1"}`, nil, 400, "invalid_request"},
		{"host with a dot", `{"host":"a.b","command":"true"}`, nil, 400, "invalid_request"},
		{"host wildcard", `{"host":">","command":"true"}`, nil, 400, "invalid_request"},
		{"host with space", `{"host":"a b","command":"true"}`, nil, 400, "invalid_request"},
		{"NUL in arg", `{"host":"h1","command":"echo","args":["a\u0000b"]}`, nil, 400, "invalid_request"},
		{"bad env name", `{"host":"h1","command":"true","env":{"A-B":"x"}}`, nil, 400, "invalid_request"},
		{"denied env name", `{"host":"h1","command":"true","env":{"ld_preload":"/tmp/x.so"}}`, nil, 403, "forbidden"},
		{"bad encoding", `{"host":"h1","command":"cat","stdin":{"content":"x","encode":"rot13"}}`, nil, 400, "invalid_request"},
		{"wrong content type", `{"host":"h1","command":"true"}`, []string{"Content-Type", "text/plain"}, 415, "unsupported_media"},
		{"huge body", `{"host":"h1","command":"true","args":["` + strings.Repeat("x", 2<<20) + `"]}`, nil, 413, "too_large"},
		{"too many args", map[string]any{"host": "h1", "command": "true", "args": make([]string, 300)}, nil, 413, "too_large"},
		{"timeout above max", `{"host":"h1","command":"true","timeout_seconds":99999999}`, nil, 422, "unprocessable"},
		{"bad wait", `{"host":"h1","command":"true"}`, []string{"Prefer", "wait=soon"}, 400, "invalid_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, b := s.do("POST", "/v1/orders", c.body, c.hdr...)
			wantError(t, code, b, c.status, c.code)
		})
	}
	code, b = s.do("GET", "/v1/orders/"+uuid.NewString(), nil)
	wantError(t, code, b, 404, "not_found")
	code, b = s.do("GET", "/v1/orders/not-a-uuid", nil)
	wantError(t, code, b, 404, "not_found")
	code, b = s.do("GET", "/v1/orders?limit=0", nil)
	wantError(t, code, b, 400, "invalid_request")
	code, b = s.do("GET", "/v1/orders?status=bogus", nil)
	wantError(t, code, b, 400, "invalid_request")
	code, b = s.do("GET", "/v1/orders?principal=%00x", nil)
	wantError(t, code, b, 400, "invalid_request")

	// Nothing was queued, and every refusal was recorded.
	var orders, rejections int
	_ = s.b.pool.QueryRow(ctxT(t), `SELECT count(*) FROM orders`).Scan(&orders)
	_ = s.b.pool.QueryRow(ctxT(t), `SELECT count(*) FROM rejections`).Scan(&rejections)
	if orders != 0 {
		t.Fatalf("%d orders stored from bad requests", orders)
	}
	if rejections < len(cases)+2 {
		t.Fatalf("%d rejections recorded, want at least %d", rejections, len(cases)+2)
	}
	// The service is still healthy.
	resp, err = http.Get(s.url + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz after hostile input: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestStrictOrderOneHost submits 200 orders to one host from 4 concurrent
// submitters and checks that no two overlapped and that they ran exactly in
// stream order.
func TestStrictOrderOneHost(t *testing.T) {
	s := newStack(t, "fifo")
	logFile := filepath.Join(t.TempDir(), "log")
	const submitters, each = 4, 50
	ids := make([][]uuid.UUID, submitters)
	var wg sync.WaitGroup
	for w := range submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				n := strconv.Itoa(w*1000 + i)
				script := `echo start $1 >> "$2"; echo end $1 >> "$2"`
				code, b := s.do("POST", "/v1/orders", map[string]any{"host": "fifo", "command": "sh",
					"args": []string{"-c", script, "_", n, logFile}})
				if code != http.StatusAccepted {
					t.Errorf("submit: %d %s", code, b)
					return
				}
				var o api.Order
				_ = json.Unmarshal(b, &o)
				ids[w] = append(ids[w], o.ID)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	type ran struct {
		n   int
		seq uint64
	}
	var all []ran
	for w := range submitters {
		var prev uint64
		for i, id := range ids[w] {
			o := s.waitFor(id, 60*time.Second, terminal)
			if o.Status != "succeeded" {
				t.Fatalf("order %s: %s", id, o.Status)
			}
			if o.StreamSeq <= prev {
				t.Fatalf("submitter %d: order %d has stream seq %d after %d", w, i, o.StreamSeq, prev)
			}
			prev = o.StreamSeq
			all = append(all, ran{n: w*1000 + i, seq: o.StreamSeq})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].seq < all[j].seq })
	data, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2*submitters*each {
		t.Fatalf("%d log lines, want %d", len(lines), 2*submitters*each)
	}
	for i, r := range all {
		start, end := lines[2*i], lines[2*i+1]
		if start != fmt.Sprintf("start %d", r.n) || end != fmt.Sprintf("end %d", r.n) {
			t.Fatalf("execution %d: got %q,%q; want order %d (stream seq %d): overlap or out of order", i, start, end, r.n, r.seq)
		}
	}
}

// TestHostsRunInParallel proves two hosts do not wait for each other: the
// order on host a can only finish once the order on host b has run.
func TestHostsRunInParallel(t *testing.T) {
	s := newStack(t, "a", "b")
	flag := filepath.Join(t.TempDir(), "flag")
	a := s.submit(map[string]any{"host": "a", "command": "sh", "timeout_seconds": 30,
		"args": []string{"-c", `while [ ! -e "$1" ]; do sleep 0.02; done`, "_", flag}}, "", http.StatusAccepted)
	s.waitFor(a.ID, 20*time.Second, func(o api.Order) bool { return o.Status == "running" })
	b := s.submit(map[string]any{"host": "b", "command": "touch", "args": []string{flag}}, "?wait=20", http.StatusOK)
	if b.Status != "succeeded" {
		t.Fatalf("b: %s", b.Status)
	}
	if got := s.waitFor(a.ID, 30*time.Second, terminal); got.Status != "succeeded" {
		t.Fatalf("a: %s", got.Status)
	}
}

// TestDuplicatePublishRunsOnce republishes an executed order, with the same
// message id (deduplicated by JetStream) and with a fresh one (delivered,
// then recognized as finished by the worker): it runs once.
func TestDuplicatePublishRunsOnce(t *testing.T) {
	s := newStack(t, "dup")
	f := filepath.Join(t.TempDir(), "count")
	o := s.submit(map[string]any{"host": "dup", "command": "sh", "args": []string{"-c", `echo x >> "$1"`, "_", f}}, "?wait=20", http.StatusOK)
	if _, err := s.b.queue.Publish(ctxT(t), "dup", o.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.b.queue.JetStream().Publish(ctxT(t), queue.OrdersSubject+"dup", []byte(o.ID.String()),
		jetstream.WithMsgID("other-"+o.ID.String())); err != nil {
		t.Fatal(err)
	}
	// FIFO: once a later order ran, the duplicates were consumed.
	s.submit(map[string]any{"host": "dup", "command": "true"}, "?wait=20", http.StatusOK)
	data, _ := os.ReadFile(f)
	if strings.Count(string(data), "x") != 1 {
		t.Fatalf("ran %d times", strings.Count(string(data), "x"))
	}
	if got := s.get(o.ID); got.Status != "succeeded" || got.Attempt != 1 {
		t.Fatalf("order after duplicates: %+v", got)
	}
}

// TestReconcilerPublishesLostOrders records an order without publishing it,
// as when NATS fails between the commit and the publish.
func TestReconcilerPublishesLostOrders(t *testing.T) {
	s := newStack(t, "rec")
	o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "rec", Command: "true", Timeout: 10 * time.Second,
		Principal: "admin", Source: "rest", CaptureStdout: true, CaptureStderr: true}
	if _, err := s.b.store.InsertOrder(ctxT(t), o); err != nil {
		t.Fatal(err)
	}
	in := intake.New(s.b.store, s.b.queue, nil, intake.Options{ReconcileAfter: time.Nanosecond}, testLogger(t))
	n, err := in.Reconcile(ctxT(t))
	if err != nil || n != 1 {
		t.Fatalf("reconcile = %d, %v", n, err)
	}
	if got := s.waitFor(o.ID, 20*time.Second, terminal); got.Status != "succeeded" {
		t.Fatalf("status = %s", got.Status)
	}
	// Published orders are not republished.
	if n, err := in.Reconcile(ctxT(t)); err != nil || n != 0 {
		t.Fatalf("second reconcile = %d, %v", n, err)
	}
}

// TestRetentionAndHosts: old finished orders are pruned, queued ones kept;
// a stopped worker's host goes offline but stays listed with its last
// heartbeat.
func TestRetentionAndHosts(t *testing.T) {
	s := newStack(t, "ret")
	old := s.submit(map[string]any{"host": "ret", "command": "true"}, "?wait=20", http.StatusOK)
	queued := s.submit(map[string]any{"host": "nobody-home", "command": "true"}, "", http.StatusAccepted)
	if _, err := s.b.pool.Exec(ctxT(t), `UPDATE orders SET submitted_at = now() - interval '91 days', finished_at = now() - interval '91 days' WHERE id = $1`, old.ID); err != nil {
		t.Fatal(err)
	}
	in := intake.New(s.b.store, s.b.queue, nil, intake.Options{Retention: func() time.Duration { return 90 * 24 * time.Hour }}, testLogger(t))
	if n, err := in.Prune(ctxT(t)); err != nil || n != 1 {
		t.Fatalf("prune = %d, %v", n, err)
	}
	code, _ := s.do("GET", "/v1/orders/"+old.ID.String(), nil)
	if code != 404 {
		t.Fatalf("pruned order still there: %d", code)
	}
	if s.get(queued.ID).Status != "queued" {
		t.Fatal("queued order pruned")
	}

	online := func() (bool, bool) {
		code, b := s.do("GET", "/v1/hosts", nil)
		if code != 200 {
			t.Fatalf("hosts: %d %s", code, b)
		}
		var hs struct {
			Hosts []api.Host `json:"hosts"`
		}
		_ = json.Unmarshal(b, &hs)
		for _, h := range hs.Hosts {
			if h.Host == "ret" {
				return h.Online, h.LastSeen != nil
			}
		}
		return false, false
	}
	if on, _ := online(); !on {
		t.Fatal("running worker's host is not online")
	}
	// Another host is known; this one never was.
	code, b := s.do("GET", "/v1/hosts/never-seen", nil)
	wantError(t, code, b, 404, "not_found")
	s.stopWorker("ret")
	deadline := time.Now().Add(15 * time.Second)
	for {
		on, seen := online()
		if !on && seen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host still online=%v seen=%v after its worker stopped", on, seen)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestMetrics: /metrics needs a token by default and counts what happened.
func TestMetrics(t *testing.T) {
	s := newStack(t, "m1")
	s.submit(map[string]any{"host": "m1", "command": "true"}, "?wait=20", http.StatusOK)
	s.submit(map[string]any{"host": "m1", "command": "false"}, "?wait=20", http.StatusOK)
	s.submit(map[string]any{"host": "no-worker", "command": "true"}, "", http.StatusAccepted)
	// A queued order canceled in the API ends there: it counts too.
	c := s.submit(map[string]any{"host": "no-worker", "command": "true"}, "", http.StatusAccepted)
	if code, b := s.do("POST", "/v1/orders/"+c.ID.String()+"/cancel", nil); code != http.StatusOK {
		t.Fatalf("cancel a queued order: %d %s", code, b)
	}
	code, _ := s.do("POST", "/v1/orders", `{"host":"a.b","command":"x"}`)
	if code != 400 {
		t.Fatalf("bad request: %d", code)
	}
	resp, err := http.Get(s.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/metrics without a token = %d", resp.StatusCode)
	}
	code, b := s.do("GET", "/metrics", nil)
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{
		`orderly_orders_submitted_total{source="rest"} 4`,
		`orderly_orders_finished_total{host="no-worker",status="canceled"} 1`,
		`orderly_orders_finished_total{host="m1",status="succeeded"} 1`,
		`orderly_orders_finished_total{host="m1",status="failed"} 1`,
		// From the worker's start, so the first one counts as an increase.
		`orderly_orders_finished_total{host="m1",status="interrupted"} 0`,
		`orderly_exec_duration_seconds_count{host="m1"} 2`,
		`orderly_rejections_total{code="invalid_request"} 1`,
		`orderly_rejections_total{code="unauthenticated"} 1`,
		`orderly_queue_depth{host="no-worker"} 1`,
		// Never served, orders waiting: offline, so its alert can fire.
		`orderly_host_online{host="no-worker"} 0`,
		`orderly_http_request_duration_seconds_count{method="POST",route="/v1/orders",status="2xx"} 4`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
