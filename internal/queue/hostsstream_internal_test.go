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

// TestHostsStreamIsNATSBucket: the hosts bucket's stream is the one
// nats.go makes of a bucket with the lease's TTL but for rollups
// (hostsStream), so that nats.go's KV reads it as its own, and it refuses
// a rollup.
func TestHostsStreamIsNATSBucket(t *testing.T) {
	nc, js := embeddedJetStream(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	q := &Queue{nc: nc, js: js, opts: Options{LeaseTTL: 7 * time.Second}}
	cfg := q.hostsStream(ctx)
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: HostsBucket, Description: cfg.Description,
		TTL: q.opts.LeaseTTL, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	before, err := js.Stream(ctx, "KV_"+HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if !before.CachedInfo().Config.AllowRollup {
		t.Fatal("nats.go made a bucket without rollups: hostsStream no longer needs to differ from it")
	}
	kv, err := q.ensureBucket(ctx, q.hostsStream(ctx))
	if err != nil {
		t.Fatal(err)
	}
	after, err := js.Stream(ctx, "KV_"+HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	want := before.CachedInfo().Config
	want.AllowRollup = false
	if got := after.CachedInfo().Config; !reflect.DeepEqual(got, want) {
		t.Fatalf("the hosts stream:\n%+v\nwant nats.go's bucket without rollups:\n%+v", got, want)
	}
	if _, err := kv.Put(ctx, "lease.h2", []byte("w2")); err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg("$KV." + HostsBucket + ".standby.h1")
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupAll)
	ack, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ack.Data), "rollup not permitted") {
		t.Fatalf("a rollup in the hosts bucket was answered %s, want a refusal", ack.Data)
	}
	if e, err := kv.Get(ctx, "lease.h2"); err != nil || string(e.Value()) != "w2" {
		t.Fatalf("h2's lease after the rollup: %v", err)
	}
}
