package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderly-run/orderly/api"
)

// TestListingsStreamLargeOutputs: a listing (GET /v1/orders, a fan-out's
// answer, GET /v1/batches/{id}) writes each order exactly as GET
// /v1/orders/{id} writes it, large kept outputs included, but streams
// those from the database a slice at a time: a page of orders with
// megabytes of output each was read whole and encoded whole, so GET
// /v1/orders?limit=1000 could hold gigabytes.
func TestListingsStreamLargeOutputs(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"lo-a", "lo-b"}})
	var ids []string
	for _, body := range []map[string]any{
		{"host": "lo-a", "command": "seq", "args": []string{"1", "900000"}},                    // 6.3 MB of text
		{"host": "lo-a", "command": "head", "args": []string{"-c", "3000000", "/dev/urandom"}}, // base64
		{"host": "lo-a", "command": "seq", "args": []string{"1", "900000"}, "stdout": map[string]any{"encode": "base85"}},
		{"host": "lo-a", "command": "echo", "args": []string{"small"}},
	} {
		ids = append(ids, e.submit("admin", body, "?wait=60", http.StatusOK).ID.String())
	}
	code, b := e.do("admin", "POST", "/v1/orders?wait=60", map[string]any{"hosts": []string{"lo-a", "lo-b"},
		"command": "seq", "args": []string{"1", "900000"}})
	var fan struct {
		BatchID string            `json:"batch_id"`
		Orders  []json.RawMessage `json:"orders"`
	}
	if err := json.Unmarshal(b, &fan); code != http.StatusOK || err != nil || len(fan.Orders) != 2 {
		t.Fatalf("fan-out: %d %v %.300s", code, err, b)
	}

	// Each order as its own GET writes it.
	single := map[string][]byte{}
	for _, raw := range fan.Orders {
		var o api.Order
		_ = json.Unmarshal(raw, &o)
		ids = append(ids, o.ID.String())
	}
	for _, id := range ids {
		code, b := e.do("admin", "GET", "/v1/orders/"+id, nil)
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %.300s", id, code, b)
		}
		single[id] = bytes.TrimSpace(b)
	}
	same := func(what string, got []json.RawMessage, want int) {
		t.Helper()
		if len(got) != want {
			t.Fatalf("%s: %d orders, want %d", what, len(got), want)
		}
		for _, raw := range got {
			var o api.Order
			if err := json.Unmarshal(raw, &o); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if !bytes.Equal(raw, single[o.ID.String()]) {
				t.Fatalf("%s: order %s\n%.400s…\nwant as its own GET\n%.400s…", what, o.ID, raw, single[o.ID.String()])
			}
		}
	}
	same("fan-out answer", fan.Orders, 2)

	var list struct {
		Orders []json.RawMessage `json:"orders"`
	}
	code, b = e.do("admin", "GET", "/v1/orders?limit=10", nil)
	if err := json.Unmarshal(b, &list); code != http.StatusOK || err != nil {
		t.Fatalf("GET /v1/orders: %d %v", code, err)
	}
	same("GET /v1/orders", list.Orders, len(ids))
	// The answer is ~35 MB. Read whole, every order's outputs were held at
	// once, then encoded; streamed, the server holds the envelope and a
	// slice (148 MB against 14 here). The heap is watched while the answer
	// is read and discarded.
	if peak, answer := heapPeakDuring(t, func() int64 {
		req, _ := http.NewRequest("GET", e.url+"/v1/orders?limit=10", nil)
		req.Header.Set("Authorization", "Bearer "+e.tokens["admin"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v1/orders: %d %v", resp.StatusCode, err)
		}
		return n
	}); peak > uint64(answer) {
		t.Errorf("GET /v1/orders took the heap %d MB up for an answer of %d MB", peak>>20, answer>>20)
	}

	code, b = e.do("admin", "GET", "/v1/batches/"+fan.BatchID, nil)
	if err := json.Unmarshal(b, &list); code != http.StatusOK || err != nil {
		t.Fatalf("GET /v1/batches: %d %v", code, err)
	}
	same("GET /v1/batches/{id}", list.Orders, 2)
}

// heapPeakDuring runs fn, which returns a size, and reports how far the
// live heap rose above where it was while fn ran, sampled every 100 µs,
// with the collector running after every 10 % of growth so that garbage
// counts little.
func heapPeakDuring(t *testing.T, fn func() int64) (peak uint64, n int64) {
	t.Helper()
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	runtime.GC()
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	base := heap()
	var top atomic.Uint64
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			if h := heap(); h > base && h-base > top.Load() {
				top.Store(h - base)
			}
			select {
			case <-done:
				return
			case <-time.After(100 * time.Microsecond):
			}
		}
	}()
	n = fn()
	close(done)
	<-stopped
	return top.Load(), n
}

// TestListingsWithoutOutputs: with outputs=none, GET /v1/orders and GET
// /v1/batches/{id} answer every order as they do without it, except that
// no output has its content: bytes, truncated and sha256 are the same,
// and encode is the one the order asked for (whether text went out as
// base64 is known only from the content). The answer is kilobytes where
// the full one is megabytes. Any other value than full or none is a 400
// with a stable code.
func TestListingsWithoutOutputs(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"lo-a", "lo-b"}})
	for _, body := range []map[string]any{
		{"host": "lo-a", "command": "seq", "args": []string{"1", "300000"}},                   // 2 MB of text
		{"host": "lo-a", "command": "head", "args": []string{"-c", "300000", "/dev/urandom"}}, // switched to base64
		{"host": "lo-a", "command": "seq", "args": []string{"1", "30000"}, "stdout": map[string]any{"encode": "base85"}},
		{"host": "lo-a", "command": "sh", "args": []string{"-c", "echo small; echo warn >&2"}},
	} {
		e.submit("admin", body, "?wait=60", http.StatusOK)
	}
	e.submit("admin", map[string]any{"host": "lo-none", "command": "true"}, "", http.StatusAccepted) // queued: no result
	code, b := e.do("admin", "POST", "/v1/orders?wait=60", map[string]any{"hosts": []string{"lo-a", "lo-b"},
		"command": "seq", "args": []string{"1", "100000"}})
	var fan api.Batch
	if err := json.Unmarshal(b, &fan); code != http.StatusOK || err != nil {
		t.Fatalf("fan-out: %d %v %.300s", code, err, b)
	}

	// withoutContent is a full answer as outputs=none should write it.
	switched := 0
	withoutContent := func(v any) any {
		orders, _ := v.(map[string]any)["orders"].([]any)
		for _, o := range orders {
			res, _ := o.(map[string]any)["result"].(map[string]any)
			if res == nil {
				continue
			}
			for _, name := range []string{"stdout", "stderr"} {
				st := res[name].(map[string]any)
				if _, ok := st["content"].(string); !ok {
					t.Fatalf("a full answer's %s has no content: %v", name, st)
				}
				delete(st, "content")
				if st["switched_to_base64"] == true {
					st["encode"] = nil // as asked
					delete(st, "switched_to_base64")
					switched++
				}
			}
		}
		return v
	}
	for _, c := range []struct{ what, path, sep string }{
		{"GET /v1/orders", "/v1/orders?limit=20", "&"},
		{"GET /v1/batches/{id}", "/v1/batches/" + fan.BatchID.String(), "?"},
	} {
		code, full := e.do("admin", "GET", c.path, nil)
		if code != http.StatusOK {
			t.Fatalf("%s: %d %.300s", c.what, code, full)
		}
		if code, b := e.do("admin", "GET", c.path+c.sep+"outputs=full", nil); code != http.StatusOK || !bytes.Equal(b, full) {
			t.Fatalf("%s with outputs=full: %d, not the answer without it", c.what, code)
		}
		code, lean := e.do("admin", "GET", c.path+c.sep+"outputs=none", nil)
		if code != http.StatusOK {
			t.Fatalf("%s with outputs=none: %d %.300s", c.what, code, lean)
		}
		var gotFull, gotLean any
		if err := json.Unmarshal(full, &gotFull); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(lean, &gotLean); err != nil {
			t.Fatal(err)
		}
		if want := withoutContent(gotFull); !reflect.DeepEqual(gotLean, want) {
			wb, _ := json.Marshal(want)
			t.Fatalf("%s with outputs=none\n%.2000s\nwant the full answer without contents\n%.2000s", c.what, lean, wb)
		}
		if len(full) < 1<<20 || len(lean) > 16<<10 {
			t.Errorf("%s: %d bytes with the outputs, %d without", c.what, len(full), len(lean))
		}
	}
	if switched != 1 {
		t.Errorf("%d outputs switched to base64, want the random bytes' one", switched)
	}

	for _, path := range []string{"/v1/orders?outputs=bogus", "/v1/orders?outputs=None", "/v1/orders?outputs=none,full",
		"/v1/batches/" + fan.BatchID.String() + "?outputs=content"} {
		code, b := e.do("admin", "GET", path, nil)
		var env api.ErrorBody
		if err := json.Unmarshal(b, &env); err != nil || code != http.StatusBadRequest ||
			env.Error.Code != "invalid_request" || env.Error.Details["field"] != "outputs" {
			t.Errorf("GET %s: %d %s, want 400 invalid_request on field outputs", path, code, b)
		}
	}
}
