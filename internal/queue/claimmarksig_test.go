package queue_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestClaimMarkTrustedOnlyWithItsHostsSignature: a claim mark is read
// back only when its host's key signed it for that host. An unsigned mark
// (what another host's seed stores through a reply subject, or an older
// worker writes), a signed one copied to another host's key, one whose
// fields were changed under its signature, and one signed with another
// host's key are ErrUnauthenticatedClaimMark; a raise writes over such a
// mark however far it claims to be, and still not over a signed mark at
// least as far. A reader without a key reads the fields as before.
func TestClaimMarkTrustedOnlyWithItsHostsSignature(t *testing.T) {
	ctx := t.Context()
	ns := testenv.NATSServer(t, &server.Options{})
	q := testenv.Queue(t, ns.ClientURL(), "api", queue.Options{})
	if err := q.RaisePostgresMark(ctx, 1); err != nil { // makes the bucket
		t.Fatal(err)
	}
	kv, err := testenv.JetStream(t, ns.ClientURL(), "forger").KeyValue(ctx, queue.MarksBucket)
	if err != nil {
		t.Fatal(err)
	}
	k1, k2 := queue.NewMarkKey([]byte("seed of h1")), queue.NewMarkKey([]byte("seed of h2"))
	// Written in a zone of its own: the signature is over the instant.
	at := time.Date(2026, 12, 6, 3, 0, 0, 123456789, time.FixedZone("east", 5*3600))
	if err := q.RaiseClaimMark(ctx, "h1", queue.ClaimMark{Seq: 5, Stored: at, Attempt: 2}, k1); err != nil {
		t.Fatal(err)
	}
	if m, err := q.ClaimMarkOf(ctx, "h1", k1); err != nil || m.Seq != 5 || m.Attempt != 2 || !m.Stored.Equal(at) {
		t.Fatalf("h1's signed mark read with h1's key: %+v %v", m, err)
	}
	if m, err := q.ClaimMarkOf(ctx, "h1", nil); err != nil || m.Seq != 5 {
		t.Fatalf("h1's signed mark read without a key: %+v %v", m, err)
	}
	if m, err := q.ClaimMarkOf(ctx, "h1", k2); !errors.Is(err, queue.ErrUnauthenticatedClaimMark) || m.Seq != 0 {
		t.Fatalf("h1's mark read with h2's key: %+v %v, want ErrUnauthenticatedClaimMark", m, err)
	}
	signed, err := kv.Get(ctx, "claimed.h1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "claimed.h2", signed.Value()); err != nil {
		t.Fatal(err)
	}
	if m, err := q.ClaimMarkOf(ctx, "h2", k1); !errors.Is(err, queue.ErrUnauthenticatedClaimMark) {
		t.Fatalf("h1's signed mark copied to h2's key, read with h1's key: %+v %v, want ErrUnauthenticatedClaimMark", m, err)
	}

	for _, forged := range []string{
		`{"seq":1000000000,"stored":"2200-01-01T00:00:00Z"}`,
		// h1's own signature, on a mark moved far ahead.
		`{"seq":1000000000,"stored":"2200-01-01T00:00:00Z","attempt":2,"sig":"` + sigOf(t, signed.Value()) + `"}`,
	} {
		if _, err := kv.Put(ctx, "claimed.h1", []byte(forged)); err != nil {
			t.Fatal(err)
		}
		if m, err := q.ClaimMarkOf(ctx, "h1", k1); !errors.Is(err, queue.ErrUnauthenticatedClaimMark) || m.Seq != 0 {
			t.Fatalf("forged %s read with h1's key: %+v %v, want ErrUnauthenticatedClaimMark", forged, m, err)
		}
		if err := q.RaiseClaimMark(ctx, "h1", queue.ClaimMark{Seq: 6, Stored: at, Attempt: 1}, k1); err != nil {
			t.Fatal(err)
		}
		if m, err := q.ClaimMarkOf(ctx, "h1", k1); err != nil || m.Seq != 6 {
			t.Fatalf("h1's raise over forged %s: %+v %v, want its own mark at 6", forged, m, err)
		}
	}
	if err := q.RaiseClaimMark(ctx, "h1", queue.ClaimMark{Seq: 4, Stored: at, Attempt: 1}, k1); err != nil {
		t.Fatal(err)
	}
	if m, err := q.ClaimMarkOf(ctx, "h1", k1); err != nil || m.Seq != 6 {
		t.Fatalf("a raise to 4 under h1's own signed mark at 6: %+v %v, want it kept", m, err)
	}
}

// sigOf is the signature a stored claim mark carries.
func sigOf(t *testing.T, val []byte) string {
	t.Helper()
	var s struct {
		Sig string `json:"sig"`
	}
	if err := json.Unmarshal(val, &s); err != nil || s.Sig == "" {
		t.Fatalf("stored mark %s: no signature (%v)", val, err)
	}
	return s.Sig
}
