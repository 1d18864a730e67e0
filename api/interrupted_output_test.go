package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// evidenceHeld is a worker's store whose first write of an abandoned
// attempt's evidence (RecordEvidence) waits until release is closed:
// the takeover held between its mark of the attempt and its evidence.
type evidenceHeld struct {
	*postgres.Store
	reached chan struct{} // closed when the first evidence write comes
	release chan struct{}
	once    sync.Once
}

func (s *evidenceHeld) RecordEvidence(ctx context.Context, id uuid.UUID, attempt int, actor string, ev postgres.Evidence) error {
	s.once.Do(func() { close(s.reached) })
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Store.RecordEvidence(ctx, id, attempt, actor, ev)
}

// TestInterruptedOrderIsFinishedWithItsPartialOutput: a worker dies after
// its order printed (its output in the live stream, its result never
// written); a successor takes the host over and marks the order
// interrupted. Every answer the API gives of the order as ended holds
// the output the dead worker streamed: the follower's finished event
// (the SSE's read of PostgreSQL once the live stream is quiet), a GET,
// and the submission's ?wait. The successor is held before its evidence
// write, the moment hA28 found (docs/decisions.md, "(hA28)"): the mark
// made the order interrupted first, the partial output was stored two
// statements and a read of the live stream later, and the follower was
// told "finished" with no output in between, the GET and the wait
// answered the same, and the output appeared a moment after.
func TestInterruptedOrderIsFinishedWithItsPartialOutput(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	const host = "partial"
	body := map[string]any{"host": host, "command": "sh", "timeout_seconds": 60,
		"args": []string{"-c", "printf 'printed before the loss\\n'; printf 'and on stderr\\n' >&2"}}
	type answer struct {
		code int
		body []byte
	}
	waited := make(chan answer, 1)
	go func() {
		code, b := e.do("alice", "POST", "/v1/orders?wait=30", body)
		waited <- answer{code, b}
	}()
	var id uuid.UUID
	testenv.WaitUntil(t, 30*time.Second, "the order is recorded", func() bool {
		list, _, err := e.store.ListOrders(testenv.Context(t), postgres.Filter{Host: host, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(list) == 0 {
			return false
		}
		id = list[0].ID
		return true
	})
	followed := make(chan []string, 1)
	go func() {
		_, evs := e.events("alice", id, func(event, _ string) bool { return event == "finished" })
		followed <- evs
	}()

	// The first worker dies once the order has run: its output is in
	// the live stream, its result nowhere.
	first := e.runWorker(host, e.store, e.hostPolicy(), func(point string, o *order.Order) error {
		if point == "after_exec" && o.ID == id {
			return errWorkerCrash
		}
		return nil
	})
	select {
	case <-first:
	case <-time.After(time.Minute):
		t.Fatal("the first worker did not die at its fail point")
	}
	held := &evidenceHeld{Store: e.store, reached: make(chan struct{}), release: make(chan struct{})}
	released := sync.OnceFunc(func() { close(held.release) })
	defer released()
	e.runWorker(host, held, e.hostPolicy(), nil)
	select {
	case <-held.reached:
	case <-time.After(time.Minute):
		t.Fatal("the successor wrote no evidence")
	}

	// Held between the mark and the evidence: whatever reads the order
	// as ended must read its output.
	const wantOut, wantErr = "printed before the loss\n", "and on stderr\n"
	check := func(what string, o api.Order) {
		t.Helper()
		if o.Status != order.StatusInterrupted {
			t.Errorf("%s: status %s, want interrupted", what, o.Status)
			return
		}
		if o.Result == nil {
			t.Errorf("%s: the order reads interrupted with no result", what)
		} else if o.Result.Stdout.Content != wantOut || o.Result.Stderr.Content != wantErr {
			t.Errorf("%s: the order reads interrupted with stdout %q (%d bytes), stderr %q; want the output its worker streamed, %q and %q",
				what, o.Result.Stdout.Content, o.Result.Stdout.Bytes, o.Result.Stderr.Content, wantOut, wantErr)
		}
	}
	code, b := e.do("alice", "GET", "/v1/orders/"+id.String(), nil)
	if code != http.StatusOK {
		t.Fatalf("GET: %d %s", code, b)
	}
	var got api.Order
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	check("GET while the evidence is held", got)

	select {
	case a := <-waited:
		if a.code != http.StatusOK {
			t.Errorf("POST ?wait=30 answered %d, want 200 with the ended order: %s", a.code, a.body)
		} else if err := json.Unmarshal(a.body, &got); err != nil {
			t.Error(err)
		} else {
			check("the ?wait answer", got)
		}
	case <-time.After(time.Minute):
		t.Error("the ?wait answer did not come")
	}

	// The follower's stream ends with "finished" (its read of PostgreSQL
	// after a quiet second), or, with the fix, may wait for the
	// worker's finished event after the evidence: it is released once
	// the stream had its chance to read the order in the gap.
	var evs []string
	select {
	case evs = <-followed:
	case <-time.After(15 * time.Second):
		t.Log("no finished event in 15 s of the hold: the follower's end is checked after the evidence only")
		released()
		evs = <-followed
	}
	released()
	last := evs[len(evs)-1]
	data, ok := strings.CutPrefix(last, "finished ")
	if !ok {
		t.Fatalf("the stream ended with %q, want finished", last)
	}
	if err := json.Unmarshal([]byte(data), &got); err != nil {
		t.Fatal(err)
	}
	check("the follower's finished event", got)
	if !strings.Contains(strings.Join(evs, "\n"), `"data":"printed before the loss\n"`) {
		t.Errorf("the follower read no live chunk of the order: %q", evs)
	}
}
