package queue_test

import (
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestPublishGenerationTrustedOnlyWithTheAPIsSignature: an API that signs
// the publish generation (SignGenerations) reads back only one signed
// with its key. What another connection stores there (a worker's seed,
// through a reply subject: a number far ahead, or a signed value with
// its number moved), and one signed with another key, read as none, said
// at ERROR, and a raise writes over them however far they claim to be,
// but not over a signed generation at least as high. An API without a
// key, as before the signature, reads and raises the bare number, which
// a signed generation does not touch.
func TestPublishGenerationTrustedOnlyWithTheAPIsSignature(t *testing.T) {
	ctx := t.Context()
	ns := testenv.NATSServer(t, &server.Options{})
	var logs testenv.LogBuffer
	q := testenv.Queue(t, ns.ClientURL(), "api", queue.Options{Logger: testenv.LoggerTo(&logs)})
	key := queue.NewGenerationKey([]byte("the API's seed"))
	q.SignGenerations(key)
	if err := q.RaisePostgresMark(ctx, 5); err != nil {
		t.Fatal(err)
	}
	if g, err := q.PostgresMark(ctx); err != nil || g != 5 {
		t.Fatalf("the signed generation read back: %d %v, want 5", g, err)
	}
	kv, err := testenv.JetStream(t, ns.ClientURL(), "forger").KeyValue(ctx, queue.MarksBucket)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := kv.Get(ctx, "postgres.signed_generation")
	if err != nil {
		t.Fatal(err)
	}
	other := testenv.Queue(t, ns.ClientURL(), "other-api", queue.Options{})
	other.SignGenerations(queue.NewGenerationKey([]byte("another seed")))
	if g, err := other.PostgresMark(ctx); err != nil || g != 0 {
		t.Fatalf("the generation read with another key: %d %v, want none", g, err)
	}

	const ignored = `level=ERROR msg="the publish generation in NATS was not written with the API's own NATS credential`
	for _, forged := range []string{
		"9223372036854775807",
		`{"generation":9223372036854775807}`,
		// The API's own signature, on a generation moved far ahead.
		strings.Replace(string(signed.Value()), `"generation":5`, `"generation":9223372036854775807`, 1),
	} {
		before := strings.Count(logs.String(), ignored)
		if _, err := kv.Put(ctx, "postgres.signed_generation", []byte(forged)); err != nil {
			t.Fatal(err)
		}
		if g, err := q.PostgresMark(ctx); err != nil || g != 0 {
			t.Fatalf("forged %s: %d %v, want none", forged, g, err)
		}
		if l := logs.String(); strings.Count(l, ignored) != before+1 {
			t.Fatalf("forged %s read without its ERROR:\n%s", forged, l)
		}
		if err := q.RaisePostgresMark(ctx, 6); err != nil {
			t.Fatal(err)
		}
		if g, err := q.PostgresMark(ctx); err != nil || g != 6 {
			t.Fatalf("the raise over forged %s: %d %v, want 6", forged, g, err)
		}
	}
	if err := q.RaisePostgresMark(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if g, err := q.PostgresMark(ctx); err != nil || g != 6 {
		t.Fatalf("a raise to 4 over the signed 6: %d %v, want 6 kept", g, err)
	}

	// Without a key: the bare number, apart from the signed one.
	plain := testenv.Queue(t, ns.ClientURL(), "old-api", queue.Options{})
	if g, err := plain.PostgresMark(ctx); err != nil || g != 0 {
		t.Fatalf("the bare generation, never written: %d %v, want none", g, err)
	}
	if err := plain.RaisePostgresMark(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if g, err := plain.PostgresMark(ctx); err != nil || g != 3 {
		t.Fatalf("the bare generation: %d %v, want 3", g, err)
	}
	if g, err := q.PostgresMark(ctx); err != nil || g != 6 {
		t.Fatalf("the signed generation beside a bare one: %d %v, want 6", g, err)
	}
}
