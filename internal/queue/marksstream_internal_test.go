package queue

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestMarksStreamIsNATSBucket: the marks bucket's stream is the one
// nats.go makes of marksConfig but for rollups (marksStream), so that
// nats.go's KV reads it as its own; a bucket an orderly before it made
// (through nats.go, rollups allowed) is brought to it at the API's start,
// and refuses a rollup from then on.
func TestMarksStreamIsNATSBucket(t *testing.T) {
	nc, js := embeddedJetStream(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	q := &Queue{nc: nc, js: js}
	if _, err := js.CreateKeyValue(ctx, q.marksConfig()); err != nil {
		t.Fatal(err)
	}
	before, err := js.Stream(ctx, "KV_"+MarksBucket)
	if err != nil {
		t.Fatal(err)
	}
	if !before.CachedInfo().Config.AllowRollup {
		t.Fatal("nats.go made a bucket without rollups: marksStream no longer needs to differ from it")
	}
	kv, err := q.marksKV(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	after, err := js.Stream(ctx, "KV_"+MarksBucket)
	if err != nil {
		t.Fatal(err)
	}
	want := before.CachedInfo().Config
	want.AllowRollup = false
	if got := after.CachedInfo().Config; !reflect.DeepEqual(got, want) {
		t.Fatalf("the marks stream:\n%+v\nwant nats.go's bucket without rollups:\n%+v", got, want)
	}
	if _, err := kv.Put(ctx, postgresMarkKey, []byte("4")); err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg("$KV." + MarksBucket + ".claimed.h1")
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupAll)
	ack, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ack.Data), "rollup not permitted") {
		t.Fatalf("a rollup in the marks bucket was answered %s, want a refusal", ack.Data)
	}
	if g, err := q.PostgresMark(ctx); err != nil || g != 4 {
		t.Fatalf("the publish generation: %d %v, want 4", g, err)
	}
}
