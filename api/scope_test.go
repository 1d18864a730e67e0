package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
)

// TestReadScoping: a principal without the admin or auditor role never
// sees another principal's order, whichever way it asks: by id, by its
// events, by cancel, by any list filter, by batch, or in a host's queue.
// Admin and auditor see everything; everyone sees their own.
func TestReadScoping(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"ran"}})
	const secret = "alice secret"
	done := e.submit("alice", map[string]any{"host": "ran", "command": "echo", "args": []string{secret}}, "?wait=20", http.StatusOK)
	queued := e.submit("alice", map[string]any{"host": "idle", "command": "echo", "args": []string{secret}}, "", http.StatusAccepted)
	code, b := e.do("alice", "POST", "/v1/orders", map[string]any{"hosts": []string{"idle", "idle-2"}, "command": "echo", "args": []string{secret}})
	var batch api.Batch
	if code != http.StatusAccepted || json.Unmarshal(b, &batch) != nil || len(batch.Orders) != 2 {
		t.Fatalf("alice's fan-out: %d %s", code, b)
	}
	bobs := e.submit("bob", map[string]any{"host": "idle", "command": "echo", "args": []string{"bob's"}}, "", http.StatusAccepted)

	alices := []string{done.ID.String(), queued.ID.String(), batch.BatchID.String(),
		batch.Orders[0].ID.String(), batch.Orders[1].ID.String()}
	leaks := func(body []byte) string {
		for _, s := range append(alices, secret) {
			if strings.Contains(string(body), s) {
				return s
			}
		}
		return ""
	}

	// Requests bob must get nothing of alice's from: 404 for what names
	// her order, an answer without her orders for lists.
	for _, c := range []struct {
		name, method, path string
		want               int
	}{
		{"get finished order", "GET", "/v1/orders/" + done.ID.String(), http.StatusNotFound},
		{"get queued order", "GET", "/v1/orders/" + queued.ID.String(), http.StatusNotFound},
		{"get batch order", "GET", "/v1/orders/" + batch.Orders[0].ID.String(), http.StatusNotFound},
		{"events of finished order", "GET", "/v1/orders/" + done.ID.String() + "/events", http.StatusNotFound},
		{"events of queued order", "GET", "/v1/orders/" + queued.ID.String() + "/events", http.StatusNotFound},
		{"cancel queued order", "POST", "/v1/orders/" + queued.ID.String() + "/cancel", http.StatusNotFound},
		{"cancel finished order", "POST", "/v1/orders/" + done.ID.String() + "/cancel", http.StatusNotFound},
		{"batch", "GET", "/v1/batches/" + batch.BatchID.String(), http.StatusNotFound},
		{"list", "GET", "/v1/orders?limit=1000", http.StatusOK},
		{"list by principal", "GET", "/v1/orders?principal=alice", http.StatusOK},
		{"list by host", "GET", "/v1/orders?host=idle", http.StatusOK},
		{"list by host with a worker", "GET", "/v1/orders?host=ran", http.StatusOK},
		{"list by status", "GET", "/v1/orders?status=queued,succeeded", http.StatusOK},
		{"list by batch", "GET", "/v1/orders?batch=" + batch.BatchID.String(), http.StatusOK},
		{"list by cursor", "GET", "/v1/orders?cursor=ffffffff-ffff-7fff-bfff-ffffffffffff", http.StatusOK},
		{"host queue", "GET", "/v1/hosts/idle", http.StatusOK},
		{"host queue of the fan-out", "GET", "/v1/hosts/idle-2", http.StatusOK},
		{"host with a worker", "GET", "/v1/hosts/ran", http.StatusOK},
	} {
		t.Run(c.name, func(t *testing.T) {
			var code int
			var body []byte
			if id, ok := strings.CutSuffix(strings.TrimPrefix(c.path, "/v1/orders/"), "/events"); ok {
				// A stream that is allowed never ends by itself: stop at its first event.
				var evs []string
				code, evs = e.events("bob", uuid.MustParse(id), func(string, string) bool { return true })
				body = []byte(strings.Join(evs, "\n"))
			} else {
				code, body = e.do("bob", c.method, c.path, nil)
			}
			if code != c.want {
				t.Fatalf("bob %s %s = %d, want %d: %s", c.method, c.path, code, c.want, body)
			}
			if s := leaks(body); s != "" {
				t.Fatalf("bob %s %s shows alice's %q: %s", c.method, c.path, s, body)
			}
		})
	}
	// Bob's cancel changed nothing.
	code, b = e.do("alice", "GET", "/v1/orders/"+queued.ID.String(), nil)
	if code != http.StatusOK || !strings.Contains(string(b), `"status":"queued"`) {
		t.Fatalf("alice's queued order after bob's cancel: %d %s", code, b)
	}

	// Bob sees his own; admin and auditor see alice's too.
	for _, c := range []struct {
		as, path string
		want     []string
	}{
		{"bob", "/v1/orders?limit=1000", []string{bobs.ID.String()}},
		{"bob", "/v1/hosts/idle", []string{bobs.ID.String()}},
		{"alice", "/v1/hosts/idle", []string{queued.ID.String(), batch.Orders[0].ID.String()}},
		{"alice", "/v1/batches/" + batch.BatchID.String(), []string{batch.Orders[0].ID.String()}},
		{"admin", "/v1/orders?limit=1000", append(alices[:2:2], bobs.ID.String())},
		{"auditor", "/v1/orders?principal=alice", alices[:2]},
		{"auditor", "/v1/orders/" + done.ID.String(), []string{secret}},
		{"admin", "/v1/batches/" + batch.BatchID.String(), []string{batch.Orders[1].ID.String()}},
	} {
		code, body := e.do(c.as, "GET", c.path, nil)
		if code != http.StatusOK {
			t.Errorf("%s GET %s = %d: %s", c.as, c.path, code, body)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(string(body), w) {
				t.Errorf("%s GET %s lacks %s: %s", c.as, c.path, w, body)
			}
		}
	}
	if code, evs := e.events("auditor", done.ID, func(event, _ string) bool { return event == "finished" }); code != http.StatusOK ||
		len(evs) == 0 || !strings.HasPrefix(evs[len(evs)-1], "finished ") {
		t.Errorf("auditor's events of alice's order: %d %v", code, evs)
	}
	if code, evs := e.events("bob", done.ID, func(string, string) bool { return true }); code != http.StatusNotFound {
		t.Errorf("bob's events of alice's order: %d %v", code, evs)
	}
}

// TestHostCurrentOrderScoped: a host's heartbeat names the order it runs,
// whoever submitted it; the host list shows that id only to principals
// who may read the order.
func TestHostCurrentOrderScoped(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"busy"}})
	o := e.submit("alice", map[string]any{"host": "busy", "command": "sleep", "args": []string{"30"}}, "", http.StatusAccepted)
	id := o.ID.String()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, b := e.do("admin", "GET", "/v1/hosts", nil)
		if strings.Contains(string(b), `"current_order":"`+id+`"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the host never showed its current order: %s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, c := range []struct {
		as, path string
		shown    bool
	}{
		{"alice", "/v1/hosts", true}, {"auditor", "/v1/hosts", true},
		{"bob", "/v1/hosts", false}, {"bob", "/v1/hosts/busy", false},
	} {
		code, b := e.do(c.as, "GET", c.path, nil)
		if code != http.StatusOK || strings.Contains(string(b), id) != c.shown {
			t.Errorf("%s GET %s: %d, shows alice's running order %t, want %t: %s", c.as, c.path, code, !c.shown, c.shown, b)
		}
	}
	e.do("alice", "POST", "/v1/orders/"+id+"/cancel", map[string]any{"signal": "SIGKILL"})
}
