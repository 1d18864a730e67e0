package natsembed

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
)

// bus is an embedded server with credentials for serve's host "h0" and the
// workers of hosts h1 and h2.
type bus struct {
	url   string
	creds *Credentials
}

func startBus(t *testing.T) *bus {
	t.Helper()
	creds, err := EnsureCredentials(filepath.Join(t.TempDir(), "creds"), "h0", []string{"h1", "h2"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start(Options{Dir: t.TempDir(), Port: -1, Logger: testLogger(t), Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return &bus{url: s.ClientURL(), creds: creds}
}

// client is a connection that records the permission violations the
// server reports to it.
type client struct {
	nc         *nats.Conn
	mu         sync.Mutex
	violations []string
	changed    chan struct{}
}

func (b *bus) connect(t *testing.T, seed, inbox string) *client {
	t.Helper()
	c := &client{changed: make(chan struct{}, 64)}
	nk, err := nats.NkeyOptionFromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(b.url, nk, nats.CustomInboxPrefix(inbox),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				c.mu.Lock()
				c.violations = append(c.violations, err.Error())
				c.mu.Unlock()
				c.changed <- struct{}{}
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c.nc = nc
	return c
}

// refused waits until the server has reported a violation naming subject,
// in which a * token stands for any one token.
func (c *client) refused(t *testing.T, what, subject string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		for _, v := range c.violations {
			if matches(v, what+` to "`+subject+`"`) {
				c.mu.Unlock()
				return
			}
		}
		c.mu.Unlock()
		select {
		case <-c.changed:
		case <-deadline:
			t.Fatalf("no permission violation for %s to %q; saw %q", what, subject, c.violations)
		}
	}
}

func matches(s, pattern string) bool {
	parts := strings.Split(pattern, "*")
	i := strings.Index(s, parts[0])
	if i < 0 {
		return false
	}
	s = s[i+len(parts[0]):]
	for _, p := range parts[1:] {
		tok, rest, ok := strings.Cut(s, ".")
		if !ok || tok == "" || strings.ContainsAny(tok, `" `) || !strings.HasPrefix(rest, strings.TrimPrefix(p, ".")) {
			return false
		}
		s = rest[len(strings.TrimPrefix(p, ".")):]
	}
	return true
}

// clean fails if the server reported any violation to c.
func (c *client) clean(t *testing.T) {
	t.Helper()
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.violations) > 0 {
		t.Fatalf("unexpected permission violations: %q", c.violations)
	}
}

func (c *client) publish(t *testing.T, subject string) {
	t.Helper()
	if err := c.nc.Publish(subject, []byte("forged")); err != nil {
		t.Fatal(err)
	}
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func (c *client) subscribe(t *testing.T, subject string) {
	t.Helper()
	sub, err := c.nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestUnauthenticatedRefused: without a credential, or with a seed the
// server does not know, the embedded server refuses the connection.
func TestUnauthenticatedRefused(t *testing.T) {
	b := startBus(t)
	if nc, err := nats.Connect(b.url); err == nil {
		nc.Close()
		t.Fatal("connected without credentials")
	} else if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
		t.Fatalf("got %v, want an authorization violation", err)
	}
	// A credential of another server's data dir is refused too.
	other, err := EnsureCredentials(filepath.Join(t.TempDir(), "other"), "h0", nil)
	if err != nil {
		t.Fatal(err)
	}
	nk, err := nats.NkeyOptionFromSeed(other.API)
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(b.url, nk); err == nil {
		nc.Close()
		t.Fatal("connected with an unknown nkey")
	}
}

// TestCredentialFiles: seeds are 0600 in a 0700 dir, kept across starts,
// and a seed readable by others is refused.
func TestCredentialFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "creds")
	c1, err := EnsureCredentials(dir, "h0", []string{"h1"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v %v", st.Mode(), err)
	}
	for _, p := range []string{c1.Serve, c1.API, c1.Submitter, c1.Workers["h0"], c1.Workers["h1"]} {
		st, err := os.Stat(p)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", p, st, err)
		}
	}
	c2, err := EnsureCredentials(dir, "h0", []string{"h1"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range c1.users {
		if c1.users[i].Nkey != c2.users[i].Nkey {
			t.Fatalf("user %d changed across starts", i)
		}
	}
	if err := os.Chmod(c1.Workers["h1"], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureCredentials(dir, "h0", []string{"h1"}); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Fatalf("got %v, want a refusal of a world-readable seed", err)
	}
	if _, err := EnsureCredentials(dir, "h0", []string{"a.>"}); err == nil {
		t.Fatal("a host id with wildcards was accepted")
	}
}

// TestRolesOnTheBus runs each role's real traffic through the queue
// package on an authenticated server, then checks that a worker cannot
// reach another host's consumer, lease, control or output, and that a
// submitter can only submit.
func TestRolesOnTheBus(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	b := startBus(t)
	api := b.connect(t, b.creds.API, queue.APIInbox)
	qAPI, err := queue.New(ctx, api.nc, queue.Options{LeaseTTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}

	// Worker h1 does its whole job.
	w1 := b.connect(t, b.creds.Workers["h1"], queue.WorkerInbox("h1"))
	q1, err := queue.Bind(ctx, w1.nc, queue.Options{LeaseTTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	lease, err := q1.AcquireLease(ctx, "h1", "w1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lease.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	// Its heartbeat: read, then compare-and-set (Lease.Beat), twice (the
	// second on its own last revision), removed by that revision, and
	// written again.
	for range 2 {
		if err := lease.Beat(ctx, queue.HostInfo{Host: "h1", Instance: "w1"}); err != nil {
			t.Fatalf("worker h1's heartbeat: %v", err)
		}
	}
	if err := lease.Offline(ctx); err != nil {
		t.Fatalf("worker h1 removing its heartbeat: %v", err)
	}
	if err := lease.Beat(ctx, queue.HostInfo{Host: "h1", Instance: "w1"}); err != nil {
		t.Fatalf("worker h1's heartbeat after its removal: %v", err)
	}
	// A standby of h1 reports itself, and the API sees it; the report
	// goes when the standby takes over or stops.
	rev, err := q1.StandbyBeat(ctx, queue.HostInfo{Host: "h1", Instance: "w1-standby"})
	if err != nil {
		t.Fatalf("worker h1 reporting a standby: %v", err)
	}
	if _, sb, err := qAPI.Workers(ctx); err != nil || sb["h1"].Instance != "w1-standby" {
		t.Fatalf("the API's view of the standbys: %+v %v", sb, err)
	}
	if err := q1.StandbyGone(ctx, "h1", rev); err != nil {
		t.Fatalf("worker h1 removing its standby report: %v", err)
	}
	controls := make(chan queue.Control, 1)
	ctl, err := q1.SubscribeControl("h1", func(c queue.Control) { controls <- c })
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Unsubscribe()
	cons, err := q1.HostConsumer(ctx, "h1")
	if err != nil {
		t.Fatal(err)
	}
	// Both ways a takeover rewinds it: recreated, and reset in place (not
	// recreated for want of the permission: the consumer stays the same).
	if cons, err = q1.RenewHostConsumer(ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	created := cons.CachedInfo().Created
	if cons, err = q1.RewindHostConsumer(ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Created.Equal(created) {
		t.Fatalf("worker h1's consumer was created %v by the rewind in place, %v before", info.Created, created)
	}
	id := uuid.New()
	if _, err := qAPI.Publish(ctx, "h1", id); err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for m := range batch.Messages() {
		got = append(got, string(m.Data()))
		if err := m.InProgress(); err != nil {
			t.Fatal(err)
		}
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 1 || got[0] != id.String() {
		t.Fatalf("worker h1 fetched %q, want %s", got, id)
	}
	live, err := qAPI.Live(ctx, "h1", id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := q1.PublishOutput("h1", id, "stdout", 0, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if err := q1.PublishEvent(queue.Event{OrderID: id, Host: "h1", Type: "started", Status: "running"}); err != nil {
		t.Fatal(err)
	}
	defer live.Stop()
	if m, err := live.Next(ctx); err != nil || string(m.Data) != "hi" {
		t.Fatalf("live output: %v", err)
	}
	// What a worker taking over keeps of an interrupted order.
	if p, err := q1.PartialOutput(ctx, "h1", id, 1<<20, 0); err != nil || string(p.Stdout) != "hi" {
		t.Fatalf("worker h1 reading back its live output: %q %v", p.Stdout, err)
	}
	if err := qAPI.SendControl("h1", queue.Control{OrderID: id}); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-controls:
		if c.OrderID != id {
			t.Fatalf("control %+v", c)
		}
	case <-ctx.Done():
		t.Fatal("worker h1 did not receive its control message")
	}
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	w1.clean(t)
	api.clean(t)

	// Worker h2 cannot touch h1's consumer, lease, control or output.
	w2 := b.connect(t, b.creds.Workers["h2"], queue.WorkerInbox("h2"))
	q2, err := queue.Bind(ctx, w2.nc, queue.Options{LeaseTTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	short, stop := context.WithTimeout(ctx, 2*time.Second)
	if _, err := q2.HostConsumer(short, "h1"); err == nil {
		t.Fatal("worker h2 created host h1's consumer")
	}
	stop()
	w2.refused(t, "Publish", "$JS.API.CONSUMER.CREATE.ORDERLY_ORDERS.host_h1.orderly.orders.h1")
	short, stop = context.WithTimeout(ctx, 5*time.Second)
	if _, err := q2.RewindHostConsumer(short, "h1"); err == nil {
		t.Fatal("worker h2 rewound host h1's consumer")
	}
	stop()
	w2.refused(t, "Publish", "$JS.API.CONSUMER.RESET.ORDERLY_ORDERS.host_h1")
	if _, err := w2.nc.Request("$JS.API.CONSUMER.MSG.NEXT.ORDERLY_ORDERS.host_h1", []byte(`{"batch":1}`), time.Second); err == nil {
		t.Fatal("worker h2 pulled from host h1's consumer")
	}
	w2.refused(t, "Publish", "$JS.API.CONSUMER.MSG.NEXT.ORDERLY_ORDERS.host_h1")
	kv, err := jetstream.New(w2.nc)
	if err != nil {
		t.Fatal(err)
	}
	hosts, err := kv.KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	short, stop = context.WithTimeout(ctx, 2*time.Second)
	if _, err := hosts.Get(short, "lease.h1"); err == nil {
		t.Fatal("worker h2 read host h1's lease")
	}
	stop()
	w2.refused(t, "Publish", "$JS.API.DIRECT.GET.KV_orderly_hosts.$KV.orderly_hosts.lease.h1")
	short, stop = context.WithTimeout(ctx, 2*time.Second)
	if _, err := hosts.Put(short, "lease.h1", []byte("mallory")); err == nil {
		t.Fatal("worker h2 wrote host h1's lease")
	}
	stop()
	w2.refused(t, "Publish", "$KV.orderly_hosts.lease.h1")
	short, stop = context.WithTimeout(ctx, 2*time.Second)
	if _, err := q2.StandbyBeat(short, queue.HostInfo{Host: "h1", Instance: "mallory"}); err == nil {
		t.Fatal("worker h2 reported a standby of host h1")
	}
	stop()
	w2.refused(t, "Publish", "$KV.orderly_hosts.standby.h1")
	if _, err := w2.nc.Request("$JS.API.STREAM.MSG.GET.KV_orderly_hosts", []byte(`{"last_by_subj":"$KV.orderly_hosts.lease.h1"}`), time.Second); err == nil {
		t.Fatal("worker h2 read a lease through STREAM.MSG.GET")
	}
	w2.refused(t, "Publish", "$JS.API.STREAM.MSG.GET.KV_orderly_hosts")
	short, stop = context.WithTimeout(ctx, 2*time.Second)
	if _, err := hosts.Watch(short, "lease.h1"); err == nil {
		t.Fatal("worker h2 watched host h1's lease")
	}
	stop()
	w2.refused(t, "Publish", "$JS.API.CONSUMER.CREATE.KV_orderly_hosts.*.$KV.orderly_hosts.lease.h1")
	short, stop = context.WithTimeout(ctx, 2*time.Second)
	if p, err := q2.PartialOutput(short, "h1", id, 1<<20, 0); err == nil {
		t.Fatalf("worker h2 read host h1's live output: %q", p.Stdout)
	}
	stop()
	w2.refused(t, "Publish", "$JS.API.CONSUMER.CREATE.ORDERLY_LIVE.*.orderly.output.h1."+id.String())
	w2.publish(t, "orderly.control.h1")
	w2.refused(t, "Publish", "orderly.control.h1")
	w2.publish(t, queue.OutputSubjectOf("h1", id))
	w2.refused(t, "Publish", queue.OutputSubjectOf("h1", id))
	w2.publish(t, queue.EventSubjectOf("h1", id))
	w2.refused(t, "Publish", queue.EventSubjectOf("h1", id))
	w2.subscribe(t, "orderly.control.h1")
	w2.refused(t, "Subscription", "orderly.control.h1")
	w2.subscribe(t, "_INBOX.>")
	w2.refused(t, "Subscription", "_INBOX.>")
	w2.subscribe(t, queue.APIInbox+".>")
	w2.refused(t, "Subscription", queue.APIInbox+".>")
	w2.publish(t, "$JS.API.STREAM.UPDATE.ORDERLY_ORDERS")
	w2.refused(t, "Publish", "$JS.API.STREAM.UPDATE.ORDERLY_ORDERS")

	// A submitter can submit and nothing else.
	sub := b.connect(t, b.creds.Submitter, queue.SubmitterInbox)
	js, err := jetstream.New(sub.nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, queue.SubmitSubject+"h1", []byte(`{}`)); err != nil {
		t.Fatalf("submitter could not submit: %v", err)
	}
	sub.clean(t)
	for _, subj := range []string{"orderly.control.h1", queue.OutputSubjectOf("h1", id), queue.EventSubjectOf("h1", id),
		queue.OrdersSubject + "h1", "$JS.API.CONSUMER.MSG.NEXT.ORDERLY_ORDERS.host_h1", "$KV.orderly_hosts.lease.h1"} {
		sub.publish(t, subj)
		sub.refused(t, "Publish", subj)
	}
	sub.subscribe(t, queue.OutputSubject+">")
	sub.refused(t, "Subscription", queue.OutputSubject+">")

	// The API may not pose as a worker's output either.
	api.publish(t, queue.OutputSubjectOf("h1", id))
	api.refused(t, "Publish", queue.OutputSubjectOf("h1", id))
}

// TestSetCredentials: a reload of the users lets a new worker host in
// without a restart, its account's imports working at once, and
// disconnects one whose credential was withdrawn.
func TestSetCredentials(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "creds")
	c1, err := EnsureCredentials(dir, "h0", []string{"h1"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start(Options{Dir: t.TempDir(), Port: -1, Logger: testLogger(t), Credentials: c1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	apiKey, err := nats.NkeyOptionFromSeed(c1.API)
	if err != nil {
		t.Fatal(err)
	}
	api, err := nats.Connect(s.ClientURL(), apiKey, nats.CustomInboxPrefix(queue.APIInbox))
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	if _, err := queue.New(ctx, api, queue.Options{}); err != nil {
		t.Fatal(err)
	}
	dropped := make(chan struct{}, 1)
	nk, err := nats.NkeyOptionFromSeed(c1.Workers["h1"])
	if err != nil {
		t.Fatal(err)
	}
	h1, err := nats.Connect(s.ClientURL(), nk, nats.NoReconnect(), nats.ClosedHandler(func(*nats.Conn) { dropped <- struct{}{} }))
	if err != nil {
		t.Fatal(err)
	}
	defer h1.Close()

	c2, err := EnsureCredentials(dir, "h0", []string{"h2"})
	if err != nil {
		t.Fatal(err)
	}
	if c1.Same(c2) {
		t.Fatal("different worker hosts compare the same")
	}
	if err := s.SetCredentials(c2); err != nil {
		t.Fatal(err)
	}
	select {
	case <-dropped:
	case <-time.After(10 * time.Second):
		t.Fatal("the withdrawn worker h1 stayed connected")
	}
	if nc, err := nats.Connect(s.ClientURL(), nk); err == nil {
		nc.Close()
		t.Fatal("withdrawn worker h1 connected again")
	}
	nk2, err := nats.NkeyOptionFromSeed(c2.Workers["h2"])
	if err != nil {
		t.Fatal(err)
	}
	h2, err := nats.Connect(s.ClientURL(), nk2, nats.CustomInboxPrefix(queue.WorkerInbox("h2")))
	if err != nil {
		t.Fatalf("new worker h2: %v", err)
	}
	defer h2.Close()
	// Its account, new at the reload, reaches orderly's: its heartbeat is
	// stored and the bucket bound.
	q2, err := queue.Bind(ctx, h2, queue.Options{})
	if err != nil {
		t.Fatalf("new worker h2 binding the streams: %v", err)
	}
	if _, err := q2.StandbyBeat(ctx, queue.HostInfo{Host: "h2", Instance: "w2"}); err != nil {
		t.Fatalf("new worker h2's standby report: %v", err)
	}
}

// TestPublishGenerationOnTheBus: the API's credential creates the marks
// bucket, raises the publish generation in it and reads it back (the
// restore guard, intake/restore.go); a worker's may not write it.
func TestPublishGenerationOnTheBus(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	b := startBus(t)
	api := b.connect(t, b.creds.API, queue.APIInbox)
	q, err := queue.New(ctx, api.nc, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if g, err := q.PostgresMark(ctx); err != nil || g != 0 {
		t.Fatalf("the generation before any: %d %v", g, err)
	}
	for _, g := range []uint64{3, 2} { // a lower one leaves the higher
		if err := q.RaisePostgresMark(ctx, g); err != nil {
			t.Fatalf("the API raising the generation to %d: %v", g, err)
		}
	}
	if g, err := q.PostgresMark(ctx); err != nil || g != 3 {
		t.Fatalf("the generation: %d %v, want 3", g, err)
	}
	w1 := b.connect(t, b.creds.Workers["h1"], queue.WorkerInbox("h1"))
	w1.publish(t, "$KV."+queue.MarksBucket+".postgres.generation")
	w1.refused(t, "Publish", "$KV."+queue.MarksBucket+".postgres.generation")
}

// TestClaimMarkOnTheBus: the worker of a host reads and raises its own
// claim mark (worker/replay.go) through its credential, in the bucket the
// API made at its start; another host's worker may neither write nor read
// it.
func TestClaimMarkOnTheBus(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	b := startBus(t)
	api := b.connect(t, b.creds.API, queue.APIInbox)
	if _, err := queue.New(ctx, api.nc, queue.Options{}); err != nil {
		t.Fatal(err)
	}
	w1 := b.connect(t, b.creds.Workers["h1"], queue.WorkerInbox("h1"))
	q1, err := queue.Bind(ctx, w1.nc, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := q1.ClaimMarkOf(ctx, "h1", nil); err != nil || m.Seq != 0 {
		t.Fatalf("h1's claim mark before any: %+v %v", m, err)
	}
	at := time.Now().UTC().Truncate(time.Millisecond)
	for _, seq := range []uint64{7, 5} { // a lower one leaves the higher
		if err := q1.RaiseClaimMark(ctx, "h1", queue.ClaimMark{Seq: seq, Stored: at}, nil); err != nil {
			t.Fatalf("h1's worker raising its claim mark to %d: %v", seq, err)
		}
	}
	if m, err := q1.ClaimMarkOf(ctx, "h1", nil); err != nil || m.Seq != 7 || !m.Stored.Equal(at) {
		t.Fatalf("h1's claim mark: %+v %v, want 7 at %s", m, err, at)
	}
	w2 := b.connect(t, b.creds.Workers["h2"], queue.WorkerInbox("h2"))
	w2.publish(t, "$KV."+queue.MarksBucket+".claimed.h1")
	w2.refused(t, "Publish", "$KV."+queue.MarksBucket+".claimed.h1")
	w2.publish(t, "$JS.API.DIRECT.GET.KV_"+queue.MarksBucket+".$KV."+queue.MarksBucket+".claimed.h1")
	w2.refused(t, "Publish", "$JS.API.DIRECT.GET.KV_"+queue.MarksBucket+".$KV."+queue.MarksBucket+".claimed.h1")
}

// TestRollupOfAClaimMarkRefused: a worker may write its own claim mark,
// but a message has its headers, which no NATS permission judges, and
// Nats-Rollup: all on its key purged the whole marks bucket: the API's
// publish generation and every other host's claim mark, the restore
// guard off for all of them. The bucket takes no rollups now, and what
// it holds stays.
func TestRollupOfAClaimMarkRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	b := startBus(t)
	api := b.connect(t, b.creds.API, queue.APIInbox)
	qAPI, err := queue.New(ctx, api.nc, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := qAPI.RaisePostgresMark(ctx, 3); err != nil {
		t.Fatal(err)
	}
	w2 := b.connect(t, b.creds.Workers["h2"], queue.WorkerInbox("h2"))
	q2, err := queue.Bind(ctx, w2.nc, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().UTC().Truncate(time.Millisecond)
	if err := q2.RaiseClaimMark(ctx, "h2", queue.ClaimMark{Seq: 9, Stored: at}, nil); err != nil {
		t.Fatal(err)
	}
	w1 := b.connect(t, b.creds.Workers["h1"], queue.WorkerInbox("h1"))
	for _, rollup := range []string{jetstream.MsgRollupAll, jetstream.MsgRollupSubject} {
		m := nats.NewMsg("$KV." + queue.MarksBucket + ".claimed.h1")
		m.Header.Set(jetstream.MsgRollup, rollup)
		m.Data = []byte(`{"seq":1}`)
		ack, err := w1.nc.RequestMsgWithContext(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(ack.Data), "rollup not permitted") {
			t.Fatalf("worker h1's claim mark with Nats-Rollup: %s was answered %s, want a refusal", rollup, ack.Data)
		}
	}
	w1.clean(t)
	if g, err := qAPI.PostgresMark(ctx); err != nil || g != 3 {
		t.Fatalf("the publish generation after worker h1's rollups: %d %v, want 3", g, err)
	}
	if m, err := q2.ClaimMarkOf(ctx, "h2", nil); err != nil || m.Seq != 9 {
		t.Fatalf("h2's claim mark after worker h1's rollups: %+v %v, want 9", m, err)
	}
}
