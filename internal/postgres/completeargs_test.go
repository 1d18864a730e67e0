package postgres

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
)

// finishedDetail is the finished event's detail and the processes column
// as completeArgs wrote them with a map and encoding/json alone.
func finishedDetail(t *testing.T, attempt int, f Finish) (detail, procs any) {
	t.Helper()
	d := map[string]any{"attempt": attempt}
	for k, v := range f.Detail {
		d[k] = v
	}
	if f.Result.ExitCode != nil {
		d["exit_code"] = *f.Result.ExitCode
	}
	if f.Result.Signal != "" {
		d["signal"] = f.Result.Signal
	}
	if f.Result.Error != "" {
		d["error"] = f.Result.Error
	}
	return roundTrip(t, d), roundTrip(t, f.Processes)
}

func roundTrip(t *testing.T, v any) any {
	t.Helper()
	if v == nil || reflect.ValueOf(v).IsNil() {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return parse(t, b)
}

func parse(t *testing.T, b []byte) any {
	t.Helper()
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%q is not JSON: %v", b, err)
	}
	return out
}

// TestCompleteArgsDetail: the detail and processes written directly say
// what encoding/json said of the same map, for every order's plain
// values and for what falls back to it (escapes, nesting, a key of the
// result's own).
func TestCompleteArgsDetail(t *testing.T) {
	zero, seven := 0, 7
	for _, tt := range []struct {
		name string
		f    Finish
	}{
		{"an order that ran", Finish{Result: order.Result{ExitCode: &zero},
			Detail:    map[string]any{"group_gone": true, "verified": "group"},
			Processes: map[string]any{"verified": "group", "group_gone": true, "pgid": 4242}}},
		{"killed, escaped, adopted, in a cgroup", Finish{Result: order.Result{Signal: "SIGKILL", Error: "timed out after 1s"},
			Detail:    map[string]any{"group_gone": false, "verified": "", "escaped": true, "adopted": 2},
			Processes: map[string]any{"cgroup": "/sys/fs/cgroup/orderly/order-1", "pgid": 1, "escaped": true}}},
		{"refused: nothing ran", Finish{Result: order.Result{Error: "command is not allowed"},
			Detail: map[string]any{"reason": "command \"rm\" is not allowed", "unknown_policy_keys": []string{"a", "b"}}}},
		{"strings to escape", Finish{Result: order.Result{ExitCode: &seven, Error: "line\nbreak <tag> & \u2028 \\ \xff"},
			Detail: map[string]any{"resolved_path": "/usr/bin/a\"b", "reason": "tab\there"}}},
		{"a key of the result's own", Finish{Result: order.Result{ExitCode: &seven},
			Detail: map[string]any{"exit_code": 3, "attempt": 9}}},
		{"other values", Finish{Detail: map[string]any{"ratio": 0.5, "n": int64(3), "nil": nil}}},
		{"no detail", Finish{Result: order.Result{ExitCode: &zero}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args, err := completeArgs(uuid.New(), 3, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			wantDetail, wantProcs := finishedDetail(t, 3, tt.f)
			if got := parse(t, args[16].([]byte)); !reflect.DeepEqual(got, wantDetail) {
				t.Errorf("detail %s, want %v", args[16], wantDetail)
			}
			procs := args[17].([]byte)
			if procs == nil {
				if wantProcs != nil {
					t.Errorf("processes nil, want %v", wantProcs)
				}
			} else if got := parse(t, procs); !reflect.DeepEqual(got, wantProcs) {
				t.Errorf("processes %s, want %v", procs, wantProcs)
			}
		})
	}
}

// TestCompleteArgsAllocations: an order's result arguments, as the
// worker writes them for each order, are built without a map of the
// detail or encoding/json's walk of one: 27 allocations before, 14 now.
func TestCompleteArgsAllocations(t *testing.T) {
	code := 0
	f := Finish{Status: order.StatusSucceeded, Actor: "host/instance",
		Result: order.Result{ExitCode: &code, DurationMS: 3,
			Stdout: order.Output{SHA256: make([]byte, 32)}, Stderr: order.Output{SHA256: make([]byte, 32)}},
		Detail:    map[string]any{"group_gone": true, "verified": "group"},
		Processes: map[string]any{"verified": "group", "group_gone": true, "pgid": 4242}}
	id := uuid.New()
	if a := testing.AllocsPerRun(200, func() { _, _ = completeArgs(id, 1, f) }); a > 18 {
		t.Errorf("%.0f allocations per result's arguments, want at most 18", a)
	}
}
