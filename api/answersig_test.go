package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/natsembed"
	"github.com/orderly-run/orderly/internal/queue"
)

// TestAWorkerSeedCannotForgeANATSAnswer: on a bus with the real
// permissions, the seed of host web-2's worker delivers answers of its
// own making to a submitter's reply subject two ways: a push consumer of
// its own live output aimed there, and a direct get of its own heartbeat
// key (which it writes) with the reply subject as the request's reply and
// no headers (`no_hdr`). The second came on the reply subject itself with
// no reply subject and no header, which is what client.md told
// submitters to take as the API's answer. Now the API signs its answer
// with the submission's Authorization: VerifyAnswer accepts it and
// refuses both forgeries. That is on a bus of one account, as a cluster
// whose auth.conf predates the accounts; with the worker in an account
// of its own (serve's, and deploy/nats/auth.conf's now), the direct
// get's answer goes back to the worker's account and never reaches the
// submitter, while the push consumer's delivery still does, and is
// refused.
func TestAWorkerSeedCannotForgeANATSAnswer(t *testing.T) {
	for _, one := range []bool{true, false} {
		name := map[bool]string{true: "one account", false: "accounts"}[one]
		t.Run(name, func(t *testing.T) { testAWorkerSeedCannotForgeANATSAnswer(t, one) })
	}
}

func testAWorkerSeedCannotForgeANATSAnswer(t *testing.T, oneAccount bool) {
	creds, err := natsembed.EnsureCredentials(filepath.Join(t.TempDir(), "creds"), "serve0", []string{"web-2"})
	if err != nil {
		t.Fatal(err)
	}
	bus, err := natsembed.Start(natsembed.Options{Dir: t.TempDir(), Port: -1, Credentials: creds, OneAccount: oneAccount})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Shutdown)
	connect := func(seed, inbox string) *nats.Conn {
		t.Helper()
		nk, err := nats.NkeyOptionFromSeed(seed)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(bus.ClientURL(), nk, nats.CustomInboxPrefix(inbox))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	apiKey, err := nats.NkeyOptionFromSeed(creds.API)
	if err != nil {
		t.Fatal(err)
	}
	e := newAPIEnv(t, envOptions{natsURL: bus.ClientURL(), natsOpts: []nats.Option{apiKey, nats.CustomInboxPrefix(queue.APIInbox)}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const reply = queue.ReplySubject + "ci" // a fixed name: easily guessed
	submitter := connect(creds.Submitter, queue.SubmitterInbox)
	answers, err := submitter.SubscribeSync(reply)
	if err != nil {
		t.Fatal(err)
	}
	if err := submitter.Flush(); err != nil {
		t.Fatal(err)
	}

	forged := []byte(`{"order":{"id":"0193a000-0000-7000-8000-000000000000","host":"web-2","status":"succeeded","command":"deploy"}}`)
	seed := connect(creds.Workers["web-2"], queue.WorkerInbox("web-2"))
	js, err := jetstream.New(seed)
	if err != nil {
		t.Fatal(err)
	}
	// A push consumer of its own live output, delivering to the reply
	// subject.
	own := queue.OutputSubjectOf("web-2", uuid.New())
	if _, err := js.CreateConsumer(ctx, queue.LiveStream, jetstream.ConsumerConfig{
		DeliverSubject: reply, FilterSubject: own, AckPolicy: jetstream.AckNonePolicy,
	}); err != nil {
		t.Fatalf("push consumer of its own output aimed at %s: %v", reply, err)
	}
	m := nats.NewMsg(own)
	m.Header.Set("Nats-Msg-Id", "ci-1")
	m.Data = forged
	if err := seed.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	// Its own heartbeat key, read back with the reply subject as the
	// request's.
	info := "$KV." + queue.HostsBucket + ".info.web-2"
	if _, err := js.Publish(ctx, info, forged); err != nil {
		t.Fatal(err)
	}
	get := "$JS.API.DIRECT.GET.KV_" + queue.HostsBucket + "." + info
	if err := seed.PublishMsg(&nats.Msg{Subject: get, Reply: reply, Data: []byte(`{"no_hdr":true}`)}); err != nil {
		t.Fatal(err)
	}

	// Both arrive in one account; in accounts, the push consumer's only
	// (the direct get's, were it to come, is looked for below).
	want := map[bool]int{true: 2, false: 1}[oneAccount]
	var forgeries []*nats.Msg
	for len(forgeries) < want {
		f, err := answers.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("the worker seed's deliveries: %d of %d arrived: %v", len(forgeries), want, err)
		}
		forgeries = append(forgeries, f)
	}
	bare := func(f *nats.Msg) bool { return f.Subject == reply && f.Reply == "" && len(f.Header) == 0 }
	refused := func(f *nats.Msg) {
		t.Helper()
		var a api.IntakeAnswer
		if err := json.Unmarshal(f.Data, &a); err != nil || a.Order == nil || a.Order.Status != "succeeded" {
			t.Fatalf("forgery %q reads as %+v, %v", f.Data, a, err)
		}
		if _, err := api.VerifyAnswer("Bearer "+e.tokens["alice"], f); !errors.Is(err, api.ErrUnsignedAnswer) {
			t.Errorf("forgery on %s (reply %q, header %v): VerifyAnswer says %v", f.Subject, f.Reply, f.Header, err)
		}
	}
	sawBare := false
	for _, f := range forgeries {
		sawBare = sawBare || bare(f)
		if !oneAccount && bare(f) {
			t.Errorf("the direct get's answer reached the submitter through the worker's account: %q", f.Data)
		}
		refused(f)
	}
	if oneAccount && !sawBare {
		t.Error("no forgery came as the API's answer does (on the reply subject, no reply subject, no header)")
	}

	// The direct get was answered before the submission below was sent:
	// whatever of it reached the submitter comes before the API's answer.
	publishSubmission(t, submitter, e.tokens["alice"], reply, "nsig", "ci-1", map[string]any{"command": "true"})
	var real *nats.Msg
	for real == nil {
		m, err := answers.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get(api.SignatureHeader) != "" {
			real = m
			continue
		}
		if !oneAccount && bare(m) {
			t.Errorf("the direct get's answer reached the submitter through the worker's account: %q", m.Data)
		}
		refused(m)
	}
	a, err := api.VerifyAnswer("Bearer "+e.tokens["alice"], real)
	if err != nil || a.Order == nil || a.Order.Host != "nsig" {
		t.Fatalf("the API's answer %q (header %v): %+v, %v", real.Data, real.Header, a, err)
	}
	// A forger that copied a signature still does not match: the key is
	// the submitter's token.
	copied := &nats.Msg{Subject: reply, Header: nats.Header{api.SignatureHeader: real.Header[api.SignatureHeader], "Nats-Msg-Id": {"ci-1"}}, Data: forged}
	if _, err := api.VerifyAnswer("Bearer "+e.tokens["alice"], copied); !errors.Is(err, api.ErrForgedAnswer) {
		t.Errorf("a forgery with the real answer's signature: VerifyAnswer says %v", err)
	}
	if _, err := api.VerifyAnswer("Bearer "+e.tokens["bob"], real); !errors.Is(err, api.ErrForgedAnswer) {
		t.Errorf("the answer checked with another token: VerifyAnswer says %v", err)
	}
}
