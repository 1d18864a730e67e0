package queue_test

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestLiveStreamLiftsTheConsumerCap: every live follower (an SSE stream,
// a stage0 execute, a run page) reads through a consumer of its own, and
// nats-server 2.15 caps a stream that sets no cap at 1,000 consumers
// unless its config says `default_max_consumers: -1` (serve's embedded
// server and deploy/nats/ do; an operator's own nats-server need not):
// the 1,001st follower was refused, its SSE stream answered 503. The
// live stream now sets its own cap, as the orders stream does, on a new
// stream and on one an older orderly made. The server here is
// nats-server's as configured by default.
func TestLiveStreamLiftsTheConsumerCap(t *testing.T) {
	t.Run("new", func(t *testing.T) {
		ns := testenv.NATSServer(t, &server.Options{})
		q := testenv.Queue(t, ns.ClientURL(), "live-cap-new", queue.Options{})
		ctx := testenv.Context(t)
		id := uuid.New()
		for i := range 1001 {
			f, err := q.Live(ctx, "h1", id, 0)
			if err != nil {
				t.Fatalf("follower %d: %v", i+1, err)
			}
			t.Cleanup(f.Stop)
		}
	})
	t.Run("created before", func(t *testing.T) {
		ns := testenv.NATSServer(t, &server.Options{})
		ctx := testenv.Context(t)
		js := testenv.JetStream(t, ns.ClientURL(), "live-cap-old")
		// The live stream as an orderly from before made it: no cap of
		// its own.
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
			Name: queue.LiveStream, Subjects: []string{queue.OutputSubject + ">", queue.EventsSubject + ">"},
			Storage: jetstream.MemoryStorage, MaxAge: time.Hour, MaxBytes: 256 << 20, AllowMsgTTL: true,
		}); err != nil {
			t.Fatal(err)
		}
		testenv.Queue(t, ns.ClientURL(), "live-cap-lifted", queue.Options{})
		st, err := js.Stream(ctx, queue.LiveStream)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.CachedInfo().Config.MaxConsumers; got != math.MaxInt32 {
			t.Fatalf("the live stream's cap on consumers after the API's start: %d, want %d", got, math.MaxInt32)
		}
	})
	// An account that caps consumers refuses a stream with a higher cap of
	// its own; the API starts all the same, and the account's cap holds.
	t.Run("account caps consumers", func(t *testing.T) {
		conf := filepath.Join(t.TempDir(), "nats.conf")
		err := os.WriteFile(conf, []byte(`accounts: { A: { jetstream: { max_consumers: 1500 }, users: [{ user: a, password: a }] } }`), 0o600)
		if err != nil {
			t.Fatal(err)
		}
		opts, err := server.ProcessConfigFile(conf)
		if err != nil {
			t.Fatal(err)
		}
		ns := testenv.NATSServer(t, opts)
		url := fmt.Sprintf("nats://a:a@%s", ns.Addr())
		q := testenv.Queue(t, url, "live-cap-account", queue.Options{})
		testenv.Queue(t, url, "live-cap-account-again", queue.Options{})
		f, err := q.Live(testenv.Context(t), "h1", uuid.New(), 0)
		if err != nil {
			t.Fatalf("a follower under the account's cap: %v", err)
		}
		f.Stop()
	})
}
