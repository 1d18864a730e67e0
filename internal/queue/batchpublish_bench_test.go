package queue_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/natsembed"
	"github.com/orderly-run/orderly/internal/queue"
)

// BenchmarkOrdersStreamBatches stores order messages shaped as
// Queue.Publish shapes them (the id, Nats-Msg-Id, Nats-Expected-Stream)
// in a stream shaped as the orders stream with atomic batches allowed, on
// an embedded server that fsyncs every write and over an in-process
// connection, as serve's: one synchronous publish each (what the API
// does) against atomic batches (ADR-50, nats-server 2.12+) of 2 to 16,
// what group commit could hand the publish, always 16 messages in flight.
// ns/op is per message; cpu-ns/msg is the process's CPU (server and
// client) per message. It is the measurement behind docs/decisions.md,
// "JetStream's atomic batch for group commit, measured a third time
// (hB24)": worth running again when nats-server stops staging an R1
// file stream's batch in a store of its own (newBatchStore); the fsyncs
// per message are counted with strace -c -f around it.
func BenchmarkOrdersStreamBatches(b *testing.B) {
	s := syncAlwaysNATS(b)
	nc, err := nats.Connect("", nats.InProcessServer(s.InProcess()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := js.CreateStream(b.Context(), jetstream.StreamConfig{
		Name: queue.OrdersStream, Subjects: []string{queue.OrdersSubject + ">"},
		Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute, AllowAtomicPublish: true,
	}); err != nil {
		b.Fatal(err)
	}
	const inFlight = 16
	for _, k := range []int{1, 2, 4, 8, 16} {
		name := "single"
		if k > 1 {
			name = "atomic-" + strconv.Itoa(k)
		}
		b.Run(name, func(b *testing.B) {
			batches := (b.N + k - 1) / k
			var left atomic.Int64
			left.Store(int64(batches))
			var wg sync.WaitGroup
			c0 := cpuTime()
			b.ResetTimer()
			for p := range inFlight / k {
				wg.Go(func() {
					for left.Add(-1) >= 0 {
						if err := publishBatch(b, nc, js, k, p); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(cpuTime()-c0)/float64(batches*k), "cpu-ns/msg")
		})
	}
}

// syncAlwaysNATS starts an embedded server that fsyncs every write, as
// serve's does, for the benchmarks of what a write costs there; it stops
// when b ends.
func syncAlwaysNATS(b *testing.B) *natsembed.Server {
	b.Helper()
	s, err := natsembed.Start(natsembed.Options{Dir: b.TempDir(), Host: "127.0.0.1", Port: -1, SyncAlways: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Shutdown)
	return s
}

// publishBatch stores k order messages for hosts of its own (publisher
// p's): one synchronous publish for k 1, else one atomic batch, whose
// commit is answered once the whole batch is stored.
func publishBatch(b *testing.B, nc *nats.Conn, js jetstream.JetStream, k, p int) error {
	msg := func() *nats.Msg {
		id := uuid.NewString()
		return &nats.Msg{Subject: queue.OrdersSubject + "bench-" + strconv.Itoa(p), Data: []byte(id),
			Header: nats.Header{jetstream.MsgIDHeader: {id}, jetstream.ExpectedStreamHeader: {queue.OrdersStream}}}
	}
	if k == 1 {
		_, err := js.PublishMsg(b.Context(), msg())
		return err
	}
	batch := uuid.NewString()
	for i := 1; i < k; i++ {
		m := msg()
		m.Header.Set("Nats-Batch-Id", batch)
		m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i))
		if err := nc.PublishMsg(m); err != nil {
			return err
		}
	}
	m := msg()
	m.Header.Set("Nats-Batch-Id", batch)
	m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(k))
	m.Header.Set("Nats-Batch-Commit", "1")
	r, err := nc.RequestMsg(m, 10*time.Second)
	if err != nil {
		return err
	}
	var ack struct {
		Count int             `json:"count"`
		Error json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(r.Data, &ack); err != nil {
		return err
	}
	if ack.Error != nil || ack.Count != k {
		return fmt.Errorf("batch of %d answered %s", k, r.Data)
	}
	return nil
}
