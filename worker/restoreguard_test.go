package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/metrics"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestRestoreGuardOffIsShown: a worker whose NATS user lacks the claim
// mark's subjects (an account written for an orderly before it) runs its
// orders without the check that keeps an order a restored database holds
// queued from running twice. It said so once, in a WARN at its first
// tenure, and nowhere an operator looks later. Its host's info (GET
// /v1/hosts, orderly hosts) now says restore_guard "off: …" and
// orderly_worker_restore_guard is 0 for as long as NATS refuses the mark;
// once the account gives the subjects (a reload), the next write of the
// mark turns both back on.
func TestRestoreGuardOffIsShown(t *testing.T) {
	marks := "KV_" + queue.MarksBucket
	denied := &server.Permissions{Publish: &server.SubjectPermission{Allow: []string{">"},
		Deny: []string{"$JS.API.STREAM.INFO." + marks, "$JS.API.DIRECT.GET." + marks + ".>", "$KV." + queue.MarksBucket + ".>"}}}
	opts := &server.Options{Users: []*server.User{{Username: "test", Password: "test"}, {Username: "worker", Password: "worker", Permissions: denied}}}
	ns := testenv.NATSServer(t, opts)
	connect := func(user string) *queue.Queue {
		nc, err := queue.Connect(ns.ClientURL(), user, nats.UserInfo(user, user))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		q, err := queue.New(t.Context(), nc, queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	e := newEnv(t)
	e.q = connect("test") // the API's: it makes the marks bucket
	m := metrics.New()
	const host = "unguarded"
	runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second, Metrics: m}, e.store, connect("worker"), testenv.Logger(t))

	// It runs its orders, and says the guard is off where operators look.
	e.waitStatus(e.submit(host, "true"), order.StatusSucceeded)
	guardIs := func(what, prefix, says, gauge string) {
		t.Helper()
		var info queue.HostInfo
		testenv.WaitUntil(t, 30*time.Second, what, func() bool {
			online, err := e.q.OnlineHosts(context.WithoutCancel(t.Context()))
			if err != nil {
				t.Fatal(err)
			}
			info = online[host]
			return strings.HasPrefix(info.RestoreGuard, prefix) && strings.Contains(info.RestoreGuard, says) &&
				strings.Contains(scrape(t, m), `orderly_worker_restore_guard{host="`+host+`"} `+gauge+"\n")
		})
		t.Logf("%s: restore_guard %q", what, info.RestoreGuard)
	}
	// The read at the tenure's start, or a write after the claim: NATS
	// answers neither.
	guardIs("the guard shown off", "off: could not ", "NATS did not answer within 2s", "0")

	// The account gives the subjects: the next claim's write succeeds.
	healed := opts.Clone()
	healed.Users = []*server.User{{Username: "test", Password: "test"}, {Username: "worker", Password: "worker"}}
	if err := ns.ReloadOptions(healed); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(e.submit(host, "true"), order.StatusSucceeded)
	guardIs("the guard shown on again", "on", "", "1")
}

// TestRestoreGuardOffWithoutTheBucket: a worker that finds no claim mark
// bucket (its API older than the mark, or not started yet) showed its
// guard "on" from its tenure's read, which took the missing bucket for
// an empty mark, until its first claim's write failed, and then off
// until a claim was written after an API made the bucket (an idle host
// for good). It now shows it off from the tenure's start, before any
// order, and on once an API made the bucket, before any order.
func TestRestoreGuardOffWithoutTheBucket(t *testing.T) {
	url := testenv.NATS(t)
	e := newEnv(t)
	e.q = testenv.Queue(t, url, "test", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})
	// The streams as an API makes them, without the bucket: what a
	// worker of an older API's fleet finds. A worker binds, makes nothing.
	if err := testenv.JetStream(t, url, "older api").DeleteKeyValue(t.Context(), queue.MarksBucket); err != nil {
		t.Fatal(err)
	}
	nc, err := queue.Connect(url, "worker")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	wq, err := queue.Bind(t.Context(), nc, queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	const host = "nobucket"
	// The claim mark in NATS where the order starts.
	seen := make(chan queue.ClaimMark, 1)
	fp := func(p string, o *order.Order) error {
		if p == "after_claim" {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			mark, err := e.q.ClaimMarkOf(ctx, host, nil)
			if err != nil {
				t.Error(err)
			}
			seen <- mark
		}
		return nil
	}
	runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second, Metrics: m, FailPoint: fp}, e.store, wq, testenv.Logger(t))

	guard := func() string {
		online, err := e.q.OnlineHosts(context.WithoutCancel(t.Context()))
		if err != nil {
			t.Fatal(err)
		}
		return online[host].RestoreGuard
	}
	testenv.WaitUntil(t, 30*time.Second, "the host's restore_guard", func() bool { return guard() != "" })
	if g, gauge := guard(), scrape(t, m); !strings.HasPrefix(g, "off: kv bucket "+queue.MarksBucket+" does not exist yet") ||
		!strings.Contains(gauge, `orderly_worker_restore_guard{host="`+host+`"} 0`+"\n") {
		t.Fatalf("no order claimed yet, no bucket: restore_guard %q, gauge:\n%s", g, gauge)
	}

	// An API of this version starts and makes the bucket: the guard is
	// on without waiting for a claim, and the next claim is written.
	testenv.Queue(t, url, "api", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})
	testenv.WaitUntil(t, 30*time.Second, "the guard on once the bucket is made, no order claimed", func() bool {
		return guard() == "on" && strings.Contains(scrape(t, m), `orderly_worker_restore_guard{host="`+host+`"} 1`+"\n")
	})
	// The tenure's first claim since the bucket was found is written
	// before its order runs, as a tenure's first claim is.
	o := e.waitStatus(e.submit(host, "true"), order.StatusSucceeded)
	if mark := <-seen; mark.Seq != o.StreamSeq || mark.Attempt != 1 {
		t.Fatalf("the claim mark in NATS as the first order since the bucket started: %+v, want its message (seq %d), attempt 1", mark, o.StreamSeq)
	}
}
