package api

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/order"
)

// TestProcessMapAsEncodingJSON: a processMap is written as encoding/json
// writes the same map[string]any, byte for byte, by encode (no HTML
// escapes), by json.Marshal (HTML escapes) and indented, for every kind
// of JSON value, the strings encoding/json escapes, the floats it writes
// in either form, and the values it alone can write (the fallback).
func TestProcessMapAsEncodingJSON(t *testing.T) {
	var ctl strings.Builder
	for c := range 0x80 {
		ctl.WriteByte(byte(c))
	}
	maps := []map[string]any{
		{"group_gone": true, "pgid": float64(12345), "verified": "group"},
		{"verified": "reboot", "boot_id": "3f9c…", "found": false, "killed": []any{float64(1), float64(22), float64(333)}},
		{"cgroup": map[string]any{"path": "/sys/fs/cgroup/orderly/o-1", "empty": true, "procs": []any{}}, "adopted": float64(1)},
		{"nested": map[string]any{"z": nil, "a": []any{nil, "x", map[string]any{}, []any{true}}}, "nil list": []any(nil), "nil map": map[string]any(nil)},
		{"escapes": ctl.String(), `"quoted" \ key` + "\t": `<b>&amp;</b>`, "lines": "a\u2028b\u2029c", "runes": "é€😀", "del": "\x7f"},
		{"floats": []any{0.0, math.Copysign(0, -1), 1.0, -1.5, 123.456, 1e20, 1e21, 1.5e21, 1e-6, 9.99e-7, 1e-7, 5e-324, math.MaxFloat64, 1e-100, 123456789012345678.0, 0.1 + 0.2}},
		{"": "empty key", "ä": "keys sorted by bytes", "Z": 1.0, "a": 2.0, "aa": 3.0, "a\u2028": 4.0},
		{"k0": 0.0, "k1": 1.0, "k2": 2.0, "k3": 3.0, "k4": 4.0, "k5": 5.0, "k6": 6.0, "k7": 7.0, "k8": 8.0, "k9": 9.0}, // more keys than the stack's 8
		// encoding/json's alone: other Go types, text that is not UTF-8.
		{"int": 7, "pgid": float64(1)},
		{"number": json.Number("1.50"), "x": "y"},
		{"bad": "a\xffb", "ok": "c"},
		{"a\xff": "bad key"},
		{"typed": []string{"x", "<y>"}, "m": map[string]string{"b": "1", "a": "2"}},
		{},
	}
	for _, m := range maps {
		plain, ours := map[string]any(m), processMap(m)
		for _, enc := range []struct {
			name string
			do   func(v any) ([]byte, error)
		}{
			{"encode", func(v any) ([]byte, error) {
				var b bytes.Buffer
				e := json.NewEncoder(&b)
				e.SetEscapeHTML(false)
				err := e.Encode(v)
				return b.Bytes(), err
			}},
			{"Marshal", json.Marshal},
			{"MarshalIndent", func(v any) ([]byte, error) { return json.MarshalIndent(v, "", "  ") }},
			{"as a field", func(v any) ([]byte, error) {
				if p, ok := v.(processMap); ok {
					return json.Marshal(struct {
						P processMap `json:"processes,omitempty"`
					}{p})
				}
				return json.Marshal(struct {
					P map[string]any `json:"processes,omitempty"`
				}{v.(map[string]any)})
			}},
		} {
			want, werr := enc.do(plain)
			got, gerr := enc.do(ours)
			if werr != nil || gerr != nil {
				t.Fatalf("%s of %v: %v, %v", enc.name, m, werr, gerr)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s of %v:\n got %s\nwant %s", enc.name, m, got, want)
			}
		}
	}
	// NaN: encoding/json's error, not a body.
	if _, err := json.Marshal(processMap{"nan": math.NaN()}); err == nil {
		t.Error("a NaN was written")
	}
}

// TestProcessMapAllocations: a finished order's answer with its processes
// costs one allocation more than without them (the MarshalJSON's bytes);
// encoding/json's walk of the map took seven.
func TestProcessMapAllocations(t *testing.T) {
	if RaceEnabled {
		t.Skip("-race: sync.Pool drops a quarter of the encode buffers put back, so the two counts differ by more than the map's allocation")
	}
	exit := 0
	o := &order.Order{ID: order.NewID(), Host: "web1", Status: order.StatusSucceeded, Command: "true",
		Result: &order.Result{ExitCode: &exit}}
	w := &headerWriter{h: http.Header{}}
	without := toResponse(o)
	o.Processes = map[string]any{"group_gone": true, "pgid": float64(123), "verified": "group"}
	with := toResponse(o)
	a := testing.AllocsPerRun(200, func() { encode(w, http.StatusOK, &without) })
	b := testing.AllocsPerRun(200, func() { encode(w, http.StatusOK, &with) })
	if b > a+1 {
		t.Fatalf("%.0f allocations to encode an answer with processes, %.0f without: want at most one more", b, a)
	}
}
