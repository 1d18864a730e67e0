package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/testenv"
)

// waitShapes are orders of every shape a worker's result takes, for
// TestWaitAnswerIsTheOrderAsGetReadsIt: keyed by name, a submission and
// the status it ends in. Their host is act-1 (hashAction's).
var waitShapes = []struct {
	name   string
	path   string // the submission's path, ?wait included
	body   map[string]any
	status string
	// polled: its wait outlives the first poll (a second) or its
	// outputs are past the lean bound: it reads the order, as before.
	polled bool
}{
	{"true", "/v1/orders?wait=20", map[string]any{"command": "true"}, "succeeded", false},
	{"false", "/v1/orders?wait=20", map[string]any{"command": "false"}, "failed", false},
	{"both streams and exit 3", "/v1/orders?wait=20",
		map[string]any{"command": "sh", "args": []string{"-c", "echo out; echo err >&2; exit 3"}}, "failed", false},
	{"not UTF-8", "/v1/orders?wait=20", map[string]any{"command": "sh", "args": []string{"-c", `printf '\377\376x'`}}, "succeeded", false},
	{"base64", "/v1/orders?wait=20",
		map[string]any{"command": "echo", "args": []string{"hi"}, "stdout": map[string]any{"encode": "base64"}}, "succeeded", false},
	{"base85", "/v1/orders?wait=20",
		map[string]any{"command": "echo", "args": []string{"hi"}, "stderr": map[string]any{"encode": "base85"}}, "succeeded", false},
	{"not captured", "/v1/orders?wait=20",
		map[string]any{"command": "echo", "args": []string{"hi"}, "stdout": map[string]any{"capture": false}}, "succeeded", false},
	{"over the cap", "/v1/orders?wait=20",
		map[string]any{"command": "sh", "args": []string{"-c", `head -c 10000 /dev/zero | tr '\0' a`}}, "succeeded", false},
	{"past the lean bound", "/v1/orders?wait=20",
		map[string]any{"command": "sh", "args": []string{"-c", `head -c 70000 /dev/zero | tr '\0' b; head -c 3000 /dev/zero | tr '\0' c >&2`}}, "succeeded", true},
	{"timeout", "/v1/orders?wait=20",
		map[string]any{"command": "sh", "args": []string{"-c", "echo before; sleep 10"}, "timeout_seconds": 1}, "timed_out", true},
	{"not found", "/v1/orders?wait=20", map[string]any{"command": "no-such-command-hg30"}, "rejected", false},
	{"env and stdin", "/v1/orders?wait=20",
		map[string]any{"command": "sh", "args": []string{"-c", `echo "$FOO"; cat`}, "env": map[string]any{"FOO": "bar"},
			"stdin": map[string]any{"content": "aGVsbG8=", "encode": "base64"}}, "succeeded", false},
	{"idempotent with a correlation", "/v1/orders?wait=20",
		map[string]any{"command": "true", "idempotent": true, "correlation_id": "hg30-chain"}, "succeeded", false},
	{"action", "/v1/actions/hash-secret/run?wait=20",
		map[string]any{"params": map[string]any{"label": "abc", "pw": "Sup3rS3cretValue"}}, "succeeded", false},
}

// TestWaitAnswerIsTheOrderAsGetReadsIt: where the API and its worker
// share a Queue (serve), a ?wait is answered from the order its worker's
// commit wrote, read back by the result's statement, not read again
// from PostgreSQL. That answer is byte for byte what a GET of the order
// answers right after, for orders of every shape: exit codes, both
// streams, bytes that are not UTF-8, encodings, output not captured,
// cut at the cap, past the bound from which outputs stream (read again,
// as before), a timeout, a command the host refuses, env and stdin
// (erased by the result's trigger), an action (its secret erased too).
func TestWaitAnswerIsTheOrderAsGetReadsIt(t *testing.T) {
	var orders, cancels atomic.Int64
	acts := config.Actions{Bus: "system", Definitions: []config.Action{hashAction}}
	e := newAPIEnv(t, envOptions{hosts: []string{"act-1"}, actions: acts, workerActions: acts, maxOutput: 4000,
		store: func(s api.Store) api.Store { return readCounter{Store: s, orders: &orders, cancels: &cancels} }})
	const rounds = 2
	var unpolled, unpolledReads int64
	for round := 0; round < rounds; round++ {
		for _, c := range waitShapes {
			body := map[string]any{"host": "act-1"}
			for k, v := range c.body {
				body[k] = v
			}
			before := orders.Load()
			code, answer := e.do("alice", "POST", c.path, body)
			if !c.polled {
				unpolled++
				unpolledReads += orders.Load() - before
			}
			if code != 200 {
				t.Fatalf("%s: POST %s: %d %s", c.name, c.path, code, answer)
			}
			var o api.Order
			if err := json.Unmarshal(answer, &o); err != nil {
				t.Fatal(err)
			}
			if string(o.Status) != c.status {
				t.Errorf("%s: status %s, want %s: %s", c.name, o.Status, c.status, answer)
			}
			code, got := e.do("alice", "GET", "/v1/orders/"+o.ID.String(), nil)
			if code != 200 {
				t.Fatalf("%s: GET: %d %s", c.name, code, got)
			}
			if !bytes.Equal(answer, got) {
				t.Errorf("%s: the wait's answer is not GET's:\nwait: %s\nGET:  %s", c.name, answer, got)
			}
		}
	}
	// The answers compared were the worker's, not reads of PostgreSQL
	// (but for a poll's, under a heavy load).
	t.Logf("%d waits answered from their worker's commit read the order %d times", unpolled, unpolledReads)
	if unpolledReads > unpolled/4 {
		t.Errorf("%d waits answered from their worker's commit read the order %d times, want at most %d", unpolled, unpolledReads, unpolled/4)
	}
}

// TestWaitReadsNoOrderAfterItsWorkersCommit counts the order reads of
// serve's ?wait: its worker's commit reads back the order it writes and
// hands it to the waiter with the end, so a small order's wait reads no
// order from PostgreSQL; before, each read it once after the end
// (GetOrderLean). A wait that outlives a poll (a second, under a heavy
// load) reads it then: the bound leaves room for a few.
func TestWaitReadsNoOrderAfterItsWorkersCommit(t *testing.T) {
	var orders, cancels atomic.Int64
	e := newAPIEnv(t, envOptions{hosts: []string{"r1"},
		store: func(s api.Store) api.Store { return readCounter{Store: s, orders: &orders, cancels: &cancels} }})
	const n = 30
	for i := 0; i < n; i++ {
		body := map[string]any{"host": "r1", "command": "sh", "args": []string{"-c", fmt.Sprintf("echo %d; exit %d", i, i%3)}}
		if o := e.submit("alice", body, "?wait=20", 200); o.Status != "succeeded" && o.Status != "failed" {
			t.Fatalf("order %d: %s", i, o.Status)
		}
	}
	t.Logf("%d sync orders read an order %d times", n, orders.Load())
	if got := orders.Load(); got > n/5 {
		t.Errorf("%d sync orders read an order %d times; want at most %d (none but a poll's)", n, got, n/5)
	}
	if got := cancels.Load(); got != 0 {
		t.Errorf("%d sync orders that succeeded or failed read cancel requests %d times, want 0", n, got)
	}
}

// TestWaitEndedOtherwiseReadsTheOrder: an order ended by anything but
// its worker's commit carries no committed order with its end, and its
// wait reads it from PostgreSQL, as before: a queued order canceled
// while a request waits for it (the API ends it: its host has no
// worker). The answer is GET's all the same. And a cancel racing the
// end of a running order (it ends killed, or succeeded when the command
// came first) is answered as GET answers it, whichever came first,
// with the cancel request it shows.
func TestWaitEndedOtherwiseReadsTheOrder(t *testing.T) {
	var orders, cancels atomic.Int64
	e := newAPIEnv(t, envOptions{hosts: []string{"c1"},
		store: func(s api.Store) api.Store { return readCounter{Store: s, orders: &orders, cancels: &cancels} }})

	type answer struct {
		code int
		body []byte
	}
	waited := make(chan answer, 1)
	before := orders.Load()
	go func() {
		code, b := e.do("alice", "POST", "/v1/orders?wait=20", map[string]any{"host": "nobody-here", "command": "true"},
			"Idempotency-Key", "hg30-canceled-queued")
		waited <- answer{code, b}
	}()
	var listed struct {
		Orders []api.Order `json:"orders"`
	}
	testenv.WaitUntil(t, 20*time.Second, "the waited order queued", func() bool {
		_, b := e.do("admin", "GET", "/v1/orders?host=nobody-here", nil)
		return json.Unmarshal(b, &listed) == nil && len(listed.Orders) == 1
	})
	id := listed.Orders[0].ID.String()
	if code, b := e.do("alice", "POST", "/v1/orders/"+id+"/cancel", map[string]any{}); code != 200 && code != 202 {
		t.Fatalf("cancel: %d %s", code, b)
	}
	a := <-waited
	if a.code != 200 {
		t.Fatalf("the wait: %d %s", a.code, a.body)
	}
	after := orders.Load()
	code, got := e.do("alice", "GET", "/v1/orders/"+id, nil)
	if code != 200 || !bytes.Equal(a.body, got) {
		t.Errorf("a canceled order's wait answered\n%s\nGET answered %d\n%s", a.body, code, got)
	}
	// The list's reads (GetOrderLean is not one of them) aside, the wait
	// read the order at least once.
	if after-before < 1 {
		t.Errorf("the wait of an order the API canceled read it %d times, want at least one", after-before)
	}

	// Cancels racing the end of a short run, sent at several points of it.
	for i, delay := range []time.Duration{0, 300 * time.Millisecond, 800 * time.Millisecond, 950 * time.Millisecond, 1100 * time.Millisecond} {
		key := fmt.Sprintf("hg30-race-%d", i)
		go func() {
			code, b := e.do("alice", "POST", "/v1/orders?wait=20", map[string]any{"host": "c1", "command": "sh", "args": []string{"-c", "echo started; sleep 1"}},
				"Idempotency-Key", key)
			waited <- answer{code, b}
		}()
		var o api.Order
		testenv.WaitUntil(t, 20*time.Second, "the order running", func() bool {
			_, b := e.do("admin", "GET", "/v1/orders?host=c1&limit=1", nil)
			if json.Unmarshal(b, &listed) != nil || len(listed.Orders) != 1 || string(listed.Orders[0].Status) != "running" {
				return false
			}
			o = listed.Orders[0]
			return true
		})
		time.Sleep(delay) // where in the run the cancel lands: the race, not a wait for an event
		e.do("alice", "POST", "/v1/orders/"+o.ID.String()+"/cancel", map[string]any{})
		a := <-waited
		if a.code != 200 {
			t.Fatalf("race %d: the wait: %d %s", i, a.code, a.body)
		}
		code, got := e.do("alice", "GET", "/v1/orders/"+o.ID.String(), nil)
		if code != 200 || !bytes.Equal(a.body, got) {
			t.Errorf("race %d: the wait answered\n%s\nGET answered %d\n%s", i, a.body, code, got)
		}
	}
}
