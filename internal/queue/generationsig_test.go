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
	for _, forged := range []struct{ value, said string }{
		{"9223372036854775807", ignored},
		{`{"generation":9223372036854775807}`, ignored},
		// The API's own signature, on a generation moved far ahead: of
		// the form another key's has, and said as such (ForeignGenerations).
		{strings.Replace(string(signed.Value()), `"generation":5`, `"generation":9223372036854775807`, 1), foreignSaid},
	} {
		before := strings.Count(logs.String(), forged.said)
		if _, err := kv.Put(ctx, "postgres.signed_generation", []byte(forged.value)); err != nil {
			t.Fatal(err)
		}
		if g, err := q.PostgresMark(ctx); err != nil || g != 0 {
			t.Fatalf("forged %s: %d %v, want none", forged.value, g, err)
		}
		if l := logs.String(); strings.Count(l, forged.said) != before+1 {
			t.Fatalf("forged %s read without its ERROR:\n%s", forged.value, l)
		}
		if err := q.RaisePostgresMark(ctx, 6); err != nil {
			t.Fatal(err)
		}
		if g, err := q.PostgresMark(ctx); err != nil || g != 6 {
			t.Fatalf("the raise over forged %s: %d %v, want 6", forged.value, g, err)
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

// foreignSaid starts the ERROR line of a publish generation signed with
// another key.
const foreignSaid = `level=ERROR msg="the publish generation in NATS is signed with another key than this API's`

// TestPublishGenerationOfAnotherKeyIsSaidOnceAndCounted: two API
// replicas on different NATS seeds write over each other's publish
// generation at every raise (each takes the other's as unsigned). The
// API tells a well-formed generation signed with another key from one
// absent or garbled: it counts each read of one (ForeignGenerations,
// for /readyz and orderly_publish_generation_foreign_total) and says it
// at ERROR once an hour, naming the setting, instead of the ERROR "not
// written with the API's own NATS credential" at every read, which
// named a stolen worker seed and never the replicas' seeds.
func TestPublishGenerationOfAnotherKeyIsSaidOnceAndCounted(t *testing.T) {
	ctx := t.Context()
	ns := testenv.NATSServer(t, &server.Options{})
	var logs testenv.LogBuffer
	a := testenv.Queue(t, ns.ClientURL(), "api-a", queue.Options{Logger: testenv.LoggerTo(&logs)})
	a.SignGenerations(queue.NewGenerationKey([]byte("replica a's seed")))
	b := testenv.Queue(t, ns.ClientURL(), "api-b", queue.Options{})
	b.SignGenerations(queue.NewGenerationKey([]byte("replica b's seed")))
	if n, last := a.ForeignGenerations(); n != 0 || !last.IsZero() {
		t.Fatalf("before any read: %d, %v; want none", n, last)
	}
	const rounds = 5
	for i := range rounds {
		gen := uint64(10 + 2*i)
		if err := b.RaisePostgresMark(ctx, gen); err != nil {
			t.Fatal(err)
		}
		if g, err := a.PostgresMark(ctx); err != nil || g != 0 {
			t.Fatalf("round %d: replica a read %d %v; want none (replica b's)", i, g, err)
		}
		if err := a.RaisePostgresMark(ctx, gen+1); err != nil {
			t.Fatal(err)
		}
	}
	n, last := a.ForeignGenerations()
	if n != rounds || last.IsZero() {
		t.Fatalf("replica a counted %d reads of another key's generation (last %v); want %d", n, last, rounds)
	}
	l := logs.String()
	if c := strings.Count(l, foreignSaid); c != 1 || !strings.Contains(l, "nats.nkey or nats.credentials") ||
		!strings.Contains(l, `One NATS seed for every API replica`) {
		t.Fatalf("%d ERROR lines say the generation is another key's, want 1 naming the setting and deploy.md's section:\n%s", c, l)
	}
	if c := strings.Count(l, "not written with the API's own NATS credential"); c != 0 {
		t.Fatalf("%d reads of another key's generation said as an unsigned one, want none:\n%s", c, l)
	}

	// Absent, or not of the signed form: not another key's.
	kv, err := testenv.JetStream(t, ns.ClientURL(), "forger").KeyValue(ctx, queue.MarksBucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, garbled := range []string{"12", `{"generation":12}`, `{"generation":12,"sig":"abc"}`,
		`{"generation":12,"sig":"` + strings.Repeat("Z", 64) + `"}`} {
		if _, err := kv.Put(ctx, "postgres.signed_generation", []byte(garbled)); err != nil {
			t.Fatal(err)
		}
		if g, err := a.PostgresMark(ctx); err != nil || g != 0 {
			t.Fatalf("garbled %s: %d %v, want none", garbled, g, err)
		}
		if got, _ := a.ForeignGenerations(); got != rounds {
			t.Fatalf("garbled %s counted as another key's generation (%d reads, want %d)", garbled, got, rounds)
		}
	}
	if err := kv.Delete(ctx, "postgres.signed_generation"); err != nil {
		t.Fatal(err)
	}
	if g, err := a.PostgresMark(ctx); err != nil || g != 0 {
		t.Fatalf("deleted: %d %v, want none", g, err)
	}
	if got, _ := a.ForeignGenerations(); got != rounds {
		t.Fatalf("no generation counted as another key's (%d reads, want %d)", got, rounds)
	}
}
