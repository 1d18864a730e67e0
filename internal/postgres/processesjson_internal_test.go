package postgres

import (
	"encoding/json"
	"reflect"
	"testing"
)

// TestProcessesAsEncodingJSON holds processesOf to encoding/json, which
// decoded the processes column before: the same map (or nil) and an
// error exactly when encoding/json gives one, for the forms the worker
// writes, PostgreSQL's jsonb spelling of them, and every form the plain
// reading passes on (escapes, non-ASCII, nesting, numbers at and past
// float64's range, repeated keys, bad JSON, trailing data).
func TestProcessesAsEncodingJSON(t *testing.T) {
	for _, in := range []string{
		`{"pgid": 16447, "verified": "group", "group_gone": true}`,
		`{"pgid":16447,"verified":"group","group_gone":true}`,
		`{"pgid": 7, "cgroup": "/sys/fs/cgroup/orderly/o-01a2.scope", "adopted": 2, "escaped": true, "verified": "cgroup", "group_gone": false}`,
		` { "pgid" : -0 , "x" : null , "y" : 1.5e-3 , "z" : 2E+10 } `, "\t{\n\"a\"\r:\"b\"}\n",
		`{}`, ` {} `, `null`, ` null `, `{"a": 1, "a": "two"}`, `{"a": 1e400}`, `{"a": -1e-400}`, `{"a": 9007199254740993}`,
		`{"a": 01}`, `{"a": 1.}`, `{"a": .5}`, `{"a": -}`, `{"a": 1e}`, `{"a": +1}`, `{"a": 0x10}`, `{"a": NaN}`,
		`{"a": "\u00e9"}`, `{"a": "é"}`, `{"é": 1}`, `{"a\"b": 1}`, `{"a": "tab\there"}`, "{\"a\": \"\x7f\"}",
		`{"a": [1, 2]}`, `{"a": {"b": null}}`, `{"a": tru}`, `{"a": truex}`, `{"a": nul}`, `{"a": falsey}`,
		`{"a": 1} x`, `{"a": 1}}`, `{"a": 1,}`, `{,}`, `{"a" 1}`, `{"a": 1`, `{"a"`, `{`, `[]`, `5`, `"s"`, `true`, ``, ` `,
	} {
		var want map[string]any
		werr := json.Unmarshal([]byte(in), &want)
		got, err := processesOf([]byte(in))
		if (err != nil) != (werr != nil) || !reflect.DeepEqual(got, want) {
			t.Errorf("%q: got %#v, %v; encoding/json %#v, %v", in, got, err, want, werr)
		}
	}
	if got, err := processesOf(nil); got != nil || err != nil {
		t.Errorf("NULL: got %#v, %v; want nil", got, err)
	}
}

// TestProcessesAllocations: the processes the worker writes for an order
// whose group ended are read in three allocations (the map, its slots and
// the number: its keys and "group" are the known ones), not encoding/json's.
func TestProcessesAllocations(t *testing.T) {
	raw := []byte(`{"pgid": 16447, "verified": "group", "group_gone": true}`)
	var m map[string]any
	viaJSON := testing.AllocsPerRun(100, func() { m = nil; _ = json.Unmarshal(raw, &m) })
	n := testing.AllocsPerRun(100, func() { m, _ = processesOf(raw) })
	if n > 3 {
		t.Errorf("%v allocations to read an order's processes, want at most 3 (encoding/json: %v)", n, viaJSON)
	}
}
