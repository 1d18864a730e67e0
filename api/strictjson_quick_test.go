package api

import (
	"bytes"
	"reflect"
	"testing"
)

// quickBodies are bodies of every shape the walks meet: accepted ones
// (each must take the quick walk) and refused ones.
var quickBodies = []string{
	`{"host":"bench","command":"true","args":null}`,
	`{"host":"bench","command":"true","args":["-a","b"],"env":{"A":"1","a":"2"},"timeout_seconds":30}`,
	` {"host" : "h" , "command":"ls", "args":[ ], "env":{ }, "stdin":"text", "dry_run":true, "idempotent":false} `,
	`{"host":"h","command":"ls","stdin":{"content":"x","encode":"base64"},"stdout":{"capture":false,"encode":null}}`,
	`{"host":"h","command":"ls","max_output_bytes":1e3,"timeout_seconds":1.5,"expires_in_seconds":0.25}`,
	`{"host":"h","command":"ls","max_output_bytes":1.0}`,
	`{"host":"h","command":"ls","max_output_bytes":-0.0e5}`,
	`{"host":"h","command":"ls","deliver_by":"2030-01-31T15:04:05Z","hosts":["a","b*"]}`,
	`{"kind":"action","host":"h","correlation_id":"c","run_as":"nobody"}`,
	`{}`,
	// Refused, or left to the slow walk.
	``, ` `, `null`, `[]`, `"x"`, `1`, `{`, `}`, `{"host":}`, `{"host":"h",}`, `{"host":"h"}x`,
	`{"host":"h","host":"h"}`, `{"Host":"h"}`, `{"nope":1}`, `{"args":["a",null]}`, `{"args":["a",1]}`,
	`{"env":{"A":null}}`, `{"env":{"A":"1","A":"2"}}`, `{"max_output_bytes":1.5}`, `{"max_output_bytes":1e400}`,
	`{"timeout_seconds":1e-400}`, `{"deliver_by":"tomorrow"}`, `{"deliver_by":1}`, `{"deliver_by":true}`,
	`{"host":"a\"b"}`, `{"host":"a\u0062"}`, "{\"host\":\"a\tb\"}", `{"host":01}`, `{"max_output_bytes":-}`,
	`{"max_output_bytes":1.}`, `{"max_output_bytes":1e}`, `{"dry_run":tru}`, `{"dry_run":nul}`, `{"args":[1,]}`,
	`{"stdin":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`, `{"stdin":{"content":"x","content":"y"}}`,
	`{"args":{"a":1}}`, `{"host":["x"]}`, `{"env":[]}`, `{"stdout":{"capture":"yes"}}`, `{"hosts":[]}`,
}

// TestQuickCheckJSONAgreesWithTheWalk: whatever the quick walk accepts,
// the decoder's walk accepts too, with the same body to decode; the
// bodies clients send (the first ones above) take the quick walk. Each
// body is also tried with every byte removed in turn and with every byte
// doubled, for the shapes nobody thought of.
func TestQuickCheckJSONAgreesWithTheWalk(t *testing.T) {
	types := []reflect.Type{reflect.TypeFor[*SubmitRequest](), reflect.TypeFor[*ActionRunRequest](),
		reflect.TypeFor[*cancelRequest](), reflect.TypeFor[*map[string]any](), nil}
	quick := 0
	check := func(body []byte) {
		for _, typ := range types {
			rewrites, ok := quickCheckJSON(body, typ)
			if !ok {
				continue
			}
			quick++
			want, err := walkJSON(body, typ)
			if err != nil {
				t.Fatalf("%v: the quick walk accepted %q, the walk refuses it: %v", typ, body, err)
			}
			if got := rewritten(body, rewrites); !bytes.Equal(got, want) {
				t.Fatalf("%v: %q: the quick walk gives %q, the walk %q", typ, body, got, want)
			}
		}
	}
	for i, b := range quickBodies {
		body := []byte(b)
		if i < 10 {
			if _, ok := quickCheckJSON(body, reflect.TypeFor[*SubmitRequest]()); !ok {
				t.Errorf("%q: not taken by the quick walk", body)
			}
		}
		check(body)
		for j := range body {
			check(append(append([]byte{}, body[:j]...), body[j+1:]...))
			check(append(append([]byte{}, body[:j+1]...), body[j:]...))
		}
	}
	if quick < 500 {
		t.Fatalf("only %d bodies took the quick walk: the comparison compared little", quick)
	}
}

// TestDecodeSubmitRequestAllocations: the strict decode of a plain
// submission takes the quick walk, which builds no tokens. The walk with
// encoding/json's Decoder.Token took 35 allocations for this body, the
// whole decode 46; with the quick walk 11, of which the typed decode's
// Decoder three (itself, its reader, its copy of the body), gone since it
// is json.Unmarshal (docs/benchmarks.md, "The async submit after group
// commit, profiled"): 8, and 17 for a fuller body (21 before). A plain
// application/json Content-Type is taken without parsing its parameters
// into a map.
func TestDecodeSubmitRequestAllocations(t *testing.T) {
	for _, c := range []struct {
		body string
		max  float64
	}{
		{`{"host":"bench","command":"true","args":null}`, 8},
		{`{"host":"bench","command":"true","args":["-a","b"],"env":{"A":"1"},"timeout_seconds":30}`, 17},
	} {
		body := []byte(c.body)
		n := testing.AllocsPerRun(200, func() {
			var req SubmitRequest
			if err := decodeBytes(body, &req); err != nil {
				t.Fatal(err)
			}
		})
		if n > c.max {
			t.Errorf("%.0f allocations to decode %s, want at most %.0f", n, body, c.max)
		}
	}
	if n := testing.AllocsPerRun(200, func() {
		if err := checkContentType("application/json"); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("checkContentType(application/json): %.0f allocations, want 0", n)
	}
}

// FuzzQuickCheckJSON is TestQuickCheckJSONAgreesWithTheWalk for bodies
// the fuzzer makes (go test ./api -run XXX -fuzz FuzzQuickCheckJSON).
func FuzzQuickCheckJSON(f *testing.F) {
	for _, b := range quickBodies {
		f.Add([]byte(b))
	}
	typ := reflect.TypeFor[*SubmitRequest]()
	f.Fuzz(func(t *testing.T, body []byte) {
		if CheckJSONText(body) != nil {
			return // refused before either walk
		}
		rewrites, ok := quickCheckJSON(body, typ)
		if !ok {
			return
		}
		want, err := walkJSON(body, typ)
		if err != nil {
			t.Fatalf("the quick walk accepted %q, the walk refuses it: %v", body, err)
		}
		if got := rewritten(body, rewrites); !bytes.Equal(got, want) {
			t.Fatalf("%q: the quick walk gives %q, the walk %q", body, got, want)
		}
	})
}
