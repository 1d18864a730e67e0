package natsembed

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
)

// BenchmarkWorkerRequest is a worker's heartbeat put (PubAck) and direct
// get of it, as a worker sends them at each beat, on a bus of one
// account and through its account's service imports: what the imports
// cost a request.
func BenchmarkWorkerRequest(b *testing.B) {
	for _, one := range []bool{true, false} {
		b.Run(map[bool]string{true: "one account", false: "accounts"}[one], func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			creds, err := EnsureCredentials(filepath.Join(b.TempDir(), "creds"), "h0", []string{"h1"})
			if err != nil {
				b.Fatal(err)
			}
			s, err := Start(Options{Dir: b.TempDir(), Port: -1, Credentials: creds, OneAccount: one})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Shutdown()
			connect := func(seed, inbox string) *nats.Conn {
				nk, err := nats.NkeyOptionFromSeed(seed)
				if err != nil {
					b.Fatal(err)
				}
				nc, err := nats.Connect(s.ClientURL(), nk, nats.CustomInboxPrefix(inbox))
				if err != nil {
					b.Fatal(err)
				}
				return nc
			}
			api := connect(creds.API, queue.APIInbox)
			defer api.Close()
			if _, err := queue.New(ctx, api, queue.Options{}); err != nil {
				b.Fatal(err)
			}
			w1 := connect(creds.Workers["h1"], queue.WorkerInbox("h1"))
			defer w1.Close()
			js, err := jetstream.New(w1)
			if err != nil {
				b.Fatal(err)
			}
			kv, err := js.KeyValue(ctx, queue.HostsBucket)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := kv.Put(ctx, "info.h1", []byte(`{"host":"h1","instance":"w1"}`)); err != nil {
					b.Fatal(err)
				}
				if _, err := kv.Get(ctx, "info.h1"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
