package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestFinishedWithoutOutputs: GET /v1/orders/{id}/events?outputs=none
// ends with a finished event that carries the order as GET
// /v1/orders?outputs=none lists it (status, result, sizes, hashes, no
// content), not the 170 KB of its output; without the parameter the
// event carries the whole order, output included, as the docs promise
// (a follower that fell behind reads what it missed there); any other
// value is a 400.
func TestFinishedWithoutOutputs(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"fo-1"}})
	o := e.submit("alice", map[string]any{"host": "fo-1", "command": "seq", "args": []string{"1", "30000"}}, "?wait=20", http.StatusOK)
	if o.Result == nil || o.Result.Stdout.Bytes < 64<<10 {
		t.Fatalf("the order did not print its output: %+v", o.Result)
	}
	finished := func(path string) string {
		t.Helper()
		var data string
		code, evs := e.eventsAt("alice", path, func(event, d string) bool {
			if event == "finished" {
				data = d
				return true
			}
			return false
		})
		if code != http.StatusOK || data == "" {
			t.Fatalf("GET %s: %d, no finished event: %.300q", path, code, evs)
		}
		return data
	}
	base := "/v1/orders/" + o.ID.String() + "/events"
	lean := finished(base + "?outputs=none")
	var got struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		Result struct {
			ExitCode *int                       `json:"exit_code"`
			Stdout   map[string]json.RawMessage `json:"stdout"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(lean), &got); err != nil {
		t.Fatalf("finished with outputs=none: %v: %.300s", err, lean)
	}
	if len(lean) > 4<<10 || got.ID != o.ID.String() || got.Status != "succeeded" || got.Result.ExitCode == nil ||
		string(got.Result.Stdout["bytes"]) != "168894" || string(got.Result.Stdout["sha256"]) != `"`+o.Result.Stdout.SHA256+`"` ||
		got.Result.Stdout["content"] != nil {
		t.Errorf("finished with outputs=none: %d bytes: %.600s", len(lean), lean)
	}
	if whole := finished(base); !strings.Contains(whole, "29999\\n30000\\n") {
		t.Errorf("finished without outputs=none lost the output: %d bytes", len(whole))
	}
	code, evs := e.eventsAt("alice", base+"?outputs=some", func(string, string) bool { return true })
	if code != http.StatusBadRequest || !strings.Contains(strings.Join(evs, ""), "outputs") {
		t.Errorf("outputs=some: %d %q, want 400 naming outputs", code, evs)
	}
}

// TestRunPageFinishedIsSmall: the run page's stream ends with a finished
// event without the output (the page reads only the status and loads
// afresh): 1.5 MB for seq 1 200000 before.
func TestRunPageFinishedIsSmall(t *testing.T) {
	e := newUIEnv(t)
	sess, csrf := e.uiSession(t, "alice")
	loc := e.exec(t, sess, url.Values{"csrf": {csrf}, "host": {"web-1"}, "command": {"seq"}, "args": {"1\n30000"}})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.url+loc+"/events", nil)
	req.AddCookie(sess)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 4<<20)
	var event string
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "event: "); ok {
			event = v
		}
		if d, ok := strings.CutPrefix(line, "data: "); ok && event == "finished" {
			if len(d) > 4<<10 || !strings.Contains(d, `"status":"succeeded"`) || strings.Contains(d, `"content"`) {
				t.Errorf("the run page's finished event: %d bytes: %.400s", len(d), d)
			}
			return
		}
	}
	t.Fatalf("no finished event on %s/events: %v", loc, sc.Err())
}
