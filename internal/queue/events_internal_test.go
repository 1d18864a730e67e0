package queue

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// eventTexts are the strings an event's type, status and host are tried
// with: the worker's own, and any text encoding/json escapes (HTML's
// three, control bytes, U+2028 and U+2029, bytes that are not UTF-8).
var eventTexts = []string{
	"", "started", "finished", "interrupted", "running", "succeeded", "timed_out",
	"web1", "h-1.example.org", "host_with_underscore",
	`<b>&amp;</b>`, `"quoted" \ back`, "tab\there\nnew\rline\b\f\x00\x1f\x7f",
	"a\u2028b\u2029c", "é€😀", "\xff", "a\xe2\x80", "\xed\xa0\x80", strings.Repeat("x", 300),
}

// eventIDs are ids of every kind the worker meets and the extremes of
// the hex digits.
var eventIDs = []uuid.UUID{
	uuid.Nil, uuid.Max,
	uuid.MustParse("0189f7e2-8c3a-7b1d-9f00-a1b2c3d4e5f6"),
	uuid.MustParse("f47ac10b-58cc-4372-a567-0e02b2c3d479"),
	uuid.Must(uuid.NewV7()), uuid.New(),
}

// TestAppendEventAsEncodingJSON: appendEvent writes an event as
// json.Marshal does, byte for byte, after what the buffer already held,
// for every id above with every text in each of the three strings.
func TestAppendEventAsEncodingJSON(t *testing.T) {
	check := func(ev Event) {
		t.Helper()
		want, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendEvent([]byte("held"), ev); !bytes.Equal(got, append([]byte("held"), want...)) {
			t.Errorf("%+v:\n got %s\nwant held%s", ev, got, want)
		}
	}
	for _, id := range eventIDs {
		check(Event{OrderID: id, Type: "started", Status: "running", Host: "web1"})
		check(Event{OrderID: id, Type: "started", Status: "running", Host: "web1", TTL: 90 * time.Second})
		check(Event{OrderID: id, Type: "finished", Status: "succeeded", Host: "web1", Alone: true})
		for _, s := range eventTexts {
			check(Event{OrderID: id, Type: s, Status: "succeeded", Host: "web1"})
			check(Event{OrderID: id, Type: "finished", Status: s, Host: "web1"})
			check(Event{OrderID: id, Type: "finished", Status: "failed", Host: s})
		}
	}
}

// FuzzAppendEvent: the same for any id and strings; the seed corpus (run
// by go test) is every id with the texts above.
func FuzzAppendEvent(f *testing.F) {
	for i, id := range eventIDs {
		for j, s := range eventTexts {
			f.Add(id[:], s, eventTexts[(j+i+1)%len(eventTexts)], eventTexts[(j+2*i+2)%len(eventTexts)])
		}
	}
	f.Fuzz(func(t *testing.T, idBytes []byte, typ, status, host string) {
		var ev Event
		copy(ev.OrderID[:], idBytes)
		ev.Type, ev.Status, ev.Host = typ, status, host
		want, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendEvent(nil, ev); !bytes.Equal(got, want) {
			t.Fatalf("%+v:\n got %s\nwant %s", ev, got, want)
		}
	})
}

// TestOrderSubjectsAsConcatenated: the event and output subjects are the
// prefix, the host, a dot and the id's text, as concatenated before, for
// hosts short and long (past the stack's buffer), in one allocation.
func TestOrderSubjectsAsConcatenated(t *testing.T) {
	for _, id := range eventIDs {
		for _, host := range []string{"", "web1", "h-1.example.org", strings.Repeat("h", 200)} {
			if got, want := EventSubjectOf(host, id), EventsSubject+host+"."+id.String(); got != want {
				t.Errorf("EventSubjectOf(%q, %s) = %q, want %q", host, id, got, want)
			}
			if got, want := OutputSubjectOf(host, id), OutputSubject+host+"."+id.String(); got != want {
				t.Errorf("OutputSubjectOf(%q, %s) = %q, want %q", host, id, got, want)
			}
		}
	}
	id := uuid.New()
	if n := testing.AllocsPerRun(100, func() { _ = EventSubjectOf("web1", id) }); n > 1 {
		t.Errorf("EventSubjectOf: %.0f allocations, want 1", n)
	}
}

// BenchmarkEventEncode: an order's finished event, by json.Marshal (as
// PublishEvent encoded it) and by appendEvent into a reused buffer.
func BenchmarkEventEncode(b *testing.B) {
	ev := Event{OrderID: uuid.Must(uuid.NewV7()), Type: "finished", Status: "succeeded", Host: "web1"}
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("appendEvent", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf = appendEvent(buf[:0], ev)
		}
	})
}

// TestStartedTTL: a started event outlives its order's run by a minute,
// in whole seconds, when the order cannot run again and its bound is
// under the live stream's hour; else it has no TTL and the API purges
// it (Event.Alone).
func TestStartedTTL(t *testing.T) {
	for _, c := range []struct {
		timeout    time.Duration
		idempotent bool
		want       time.Duration
	}{
		{60 * time.Second, false, 2 * time.Minute},
		{1500 * time.Millisecond, false, 62 * time.Second},
		{time.Millisecond, false, 61 * time.Second},
		{58 * time.Minute, false, 59 * time.Minute},
		{59 * time.Minute, false, 0},
		{24 * time.Hour, false, 0},
		{0, false, 0},
		{60 * time.Second, true, 0},
	} {
		if got := StartedTTL(c.timeout, c.idempotent); got != c.want {
			t.Errorf("StartedTTL(%s, idempotent %v) = %s, want %s", c.timeout, c.idempotent, got, c.want)
		}
	}
}
