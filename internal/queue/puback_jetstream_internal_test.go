package queue

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// pubAckEcho answers each request on its subject with the request's own
// body, so that a publish there gets the body it sent as its stream's
// answer: any bytes a broken or hostile peer could send.
const pubAckEcho = "test.puback.echo"

// publishedBoth sends b through the orders' publish (publishStored, the
// hand reader) and through jetstream's own PublishMsg, over a real
// connection, and fails t where they read it differently.
// decodedPubAck, which TestPubAckOfAsJetStream holds the hand reader
// to, is a copy of jetstream's read; this holds it to jetstream itself.
func publishedBoth(t *testing.T, q *Queue, js jetstream.JetStream, b []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seq, err := q.publishStored(ctx, &nats.Msg{Subject: pubAckEcho, Data: b})
	var wantSeq uint64
	ack, wantErr := js.PublishMsg(ctx, &nats.Msg{Subject: pubAckEcho, Data: b})
	if ack != nil {
		wantSeq = ack.Sequence
	}
	agreeOnPubAck(t, b, seq, err, wantSeq, wantErr)
}

// echoingJetStream is a connection to a server of the test's own on
// which pubAckEcho answers, and a Queue and jetstream on it.
func echoingJetStream(t testing.TB) (*Queue, jetstream.JetStream) {
	nc, js := embeddedJetStream(t)
	sub, err := nc.Subscribe(pubAckEcho, func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return &Queue{nc: nc, js: js}, js
}

// TestPubAckOfAsJetStreamItself: every answer of pubAckAnswers, sent by
// a peer on the bus, is read by the orders' publish as jetstream's
// PublishMsg reads it; and a subject nobody answers (a stream leader
// changing) is tried again and given up as jetstream does.
func TestPubAckOfAsJetStreamItself(t *testing.T) {
	q, js := echoingJetStream(t)
	for _, a := range pubAckAnswers {
		publishedBoth(t, q, js, []byte(a))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nobody := &nats.Msg{Subject: "test.puback.nobody", Data: []byte("x")}
	_, err := q.publishStored(ctx, nobody)
	_, wantErr := js.PublishMsg(ctx, nobody)
	if !errors.Is(err, jetstream.ErrNoStreamResponse) || !errors.Is(wantErr, jetstream.ErrNoStreamResponse) {
		t.Errorf("a publish nobody answers: %v; jetstream: %v; want both %v", err, wantErr, jetstream.ErrNoStreamResponse)
	}
}

func FuzzPubAckOfAsJetStreamItself(f *testing.F) {
	q, js := echoingJetStream(f)
	for _, a := range pubAckAnswers {
		f.Add([]byte(a))
	}
	f.Fuzz(func(t *testing.T, b []byte) { publishedBoth(t, q, js, b) })
}
