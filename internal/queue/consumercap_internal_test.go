package queue

import (
	"bytes"
	"cmp"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// beforeCapUpdates is JetStream as nats-server before 2.14 answers: it
// refuses a stream update that changes the stream's cap on consumers.
type beforeCapUpdates struct{ jetstream.JetStream }

func (j beforeCapUpdates) CreateOrUpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	if st, err := j.Stream(ctx, cfg.Name); err == nil && st.CachedInfo().Config.MaxConsumers != cmp.Or(cfg.MaxConsumers, -1) {
		return nil, &jetstream.APIError{Code: 500, ErrorCode: errCodeStreamInvalidConfig,
			Description: "stream configuration update can not change MaxConsumers"}
	}
	return j.JetStream.CreateOrUpdateStream(ctx, cfg)
}

// TestOrdersStreamOnAServerThatKeepsItsCap: nats-server before 2.14
// cannot change a stream's cap on consumers, and the orders stream that
// an older orderly created there has none; the API starts all the same,
// keeps the stream's, and says how a 1,001st host would be served.
func TestOrdersStreamOnAServerThatKeepsItsCap(t *testing.T) {
	nc, js := embeddedJetStream(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: OrdersStream, Subjects: []string{OrdersSubject + ">"},
		Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	if _, err := newQueue(ctx, nc, beforeCapUpdates{js}, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}); err != nil {
		t.Fatalf("API start on a server that cannot change the cap: %v", err)
	}
	st, err := js.Stream(ctx, OrdersStream)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.MaxConsumers; got != -1 {
		t.Fatalf("orders stream's max consumers %d, want the stream's own (-1)", got)
	}
	if !strings.Contains(logs.String(), "default_max_consumers: -1") {
		t.Fatalf("no line names nats-server's setting; the log:\n%s", &logs)
	}
}

// TestLiveStreamOnAServerThatKeepsItsCap: the live stream an older
// orderly made has no cap of its own, and nats-server before 2.14 cannot
// give it one; the API starts all the same and the stream keeps its own.
func TestLiveStreamOnAServerThatKeepsItsCap(t *testing.T) {
	nc, js := embeddedJetStream(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	old := liveConfig(1)
	old.MaxConsumers = 0
	if _, err := js.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	if _, err := newQueue(ctx, nc, beforeCapUpdates{js}, Options{}); err != nil {
		t.Fatalf("API start on a server that cannot change the live stream's cap: %v", err)
	}
	st, err := js.Stream(ctx, LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.MaxConsumers; got != -1 {
		t.Fatalf("live stream's max consumers %d, want the stream's own (-1)", got)
	}
}
