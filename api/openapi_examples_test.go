package api_test

import (
	"encoding/json"
	"testing"
)

// TestCanceledOrderExampleIsTheAnswer checks the spec's CanceledOrder
// example against what canceling a queued order answers: a client written
// from the example must find the result (the reason, who canceled) where
// the API puts it.
func TestCanceledOrderExampleIsTheAnswer(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	o := e.submit("alice", map[string]any{"host": "no-worker-1", "command": "sleep", "args": []string{"60"}}, "", 202)
	code, b := e.do("alice", "POST", "/v1/orders/"+o.ID.String()+"/cancel", map[string]any{})
	if code != 200 {
		t.Fatalf("cancel: %d %s", code, b)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	ex := loadSpec(t).Components.Examples["CanceledOrder"]
	if ex == nil || ex.Value == nil {
		t.Fatal("no CanceledOrder example")
	}
	want, _ := ex.Value.Value.(map[string]any)
	res, _ := got["result"].(map[string]any)
	wantRes, _ := want["result"].(map[string]any)
	if (res == nil) != (wantRes == nil) {
		t.Fatalf("the answer's result is %v, the example's %v", got["result"], want["result"])
	}
	if res["error"] != "canceled by alice" || wantRes["error"] != "canceled by alice" || got["started_at"] != nil {
		t.Errorf("answer result %v, example result %v", res, wantRes)
	}
	for k := range wantRes {
		if _, ok := res[k]; !ok {
			t.Errorf("the example's result has %q, the answer's has not", k)
		}
	}
}
