package queue

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// FuzzBusMessages gives what the worker and the API read from the bus a
// message body: a control wake-up (controlOf: only an order's id, which
// the worker then looks up in PostgreSQL) and a host's heartbeat (live).
// A wake-up taken names a real id and says the same encoded again; a
// heartbeat taken is the host of its own key, seen when the server
// stored it and started no later, whatever clocks its body claims.
func FuzzBusMessages(f *testing.F) {
	id := "0b7e4f8a-3c1d-4e2f-9a6b-5d8c7e1f2a3b"
	for _, b := range []string{
		`{"order_id":"` + id + `"}`,
		`{"order_id":"00000000-0000-0000-0000-000000000000"}`,
		`{"order_id":"urn:uuid:` + id + `","signal":"KILL"}`,
		`{"order_id":"` + strings.ReplaceAll(id, "-", "") + `"}`,
		`{"host":"web-1","instance":"i","version":"v","started_at":"2026-12-05T10:00:00Z","last_seen":"2026-12-05T10:00:05Z"}`,
		`{"host":"web-1","started_at":"9999-12-31T23:59:59Z","last_seen":"0001-01-01T00:00:00Z"}`,
		`{"host":"web-1","started_at":"0001-01-01T00:00:01Z","last_seen":"9999-12-31T23:59:59Z"}`,
		`{"host":"web-2","current_order":"` + id + `"}`,
		`{"HOST":"web-1"}`, `null`, `[]`, `{`, ``,
	} {
		f.Add([]byte(b), "web-1")
	}
	q := &Queue{opts: Options{LeaseTTL: 10 * time.Second}}
	created := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, b []byte, host string) {
		if c, ok := controlOf(b); ok {
			if c.OrderID == uuid.Nil {
				t.Fatalf("%q taken as a wake-up of no order", b)
			}
			again, _ := json.Marshal(c)
			if c2, ok := controlOf(again); !ok || c2 != c {
				t.Fatalf("%q taken as %v, its encoding %s as %v %v", b, c, again, c2, ok)
			}
		}
		h, ok := q.live("info."+host, b, created, "info.", created.Add(time.Second))
		if !ok {
			return
		}
		if h.Host != host {
			t.Fatalf("%q under the key of %q taken as host %q", b, host, h.Host)
		}
		if !h.LastSeen.Equal(created) || h.StartedAt.After(h.LastSeen) {
			t.Fatalf("%q taken as started %s, last seen %s (stored %s)", b, h.StartedAt, h.LastSeen, created)
		}
		if _, ok := q.live("info."+host, b, created, "info.", created.Add(20*time.Second)); ok {
			t.Fatalf("%q taken two leases after it was stored", b)
		}
	})
}
