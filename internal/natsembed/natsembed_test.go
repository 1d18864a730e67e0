package natsembed

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// TestJetStreamSurvivesRestart publishes to a stream, restarts the server on
// the same store and reads the message back.
func TestJetStreamSurvivesRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()

	began := time.Now()
	s, err := Start(Options{Dir: dir, Port: -1, Logger: testLogger(t), SyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("started in %v at %s", time.Since(began), s.ClientURL())
	if !s.SyncAlways() {
		t.Fatal("the running JetStream does not fsync every write")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "TEST", Subjects: []string{"test.>"}, Storage: jetstream.FileStorage,
	}); err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(ctx, "test.a", []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Stream != "TEST" || ack.Sequence != 1 {
		t.Fatalf("ack %+v", ack)
	}
	nc.Close()
	s.Shutdown()

	s, err = Start(Options{Dir: dir, Port: -1, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	nc, err = nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err = jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, "TEST")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if string(msg.Data) != "hello" || msg.Subject != "test.a" {
		t.Fatalf("got %s %q", msg.Subject, msg.Data)
	}
}

func TestStartPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port

	_, err = Start(Options{Dir: t.TempDir(), Port: port})
	if err == nil || !strings.Contains(err.Error(), "is in use: is another orderly serve running? set nats.listen (ORDERLY_NATS__LISTEN=127.0.0.1:4223, or nats.listen in the --config file)") {
		t.Fatalf("got %v, want a port-in-use error", err)
	}
	t.Log(err)
}
