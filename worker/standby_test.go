package worker_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/natsembed"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestStandbyIsReported: a worker waiting for a host's lease reports
// itself as the host's standby for as long as it waits, and removes the
// report when it takes the host over or stops, rather than leaving it to
// the bucket's TTL (30 s here, longer than the test waits).
func TestStandbyIsReported(t *testing.T) {
	store, _ := testenv.Store(t, testenv.Postgres(t))
	q := testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: time.Second, LeaseTTL: 30 * time.Second})
	ctx := testenv.Context(t)
	start := func(instance string) func() {
		stop, _ := runWorker(t, worker.Options{Host: "sb", Instance: instance, Version: "v-" + instance,
			Heartbeat: 200 * time.Millisecond, AckWait: time.Second, ShutdownGrace: 5 * time.Second},
			store, q, testenv.Logger(t))
		return stop
	}
	// waitFor polls the host's online holder and standby until ok says
	// they are as wanted.
	waitFor := func(what string, ok func(holder, standby queue.HostInfo) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			online, err := q.OnlineHosts(ctx)
			if err != nil {
				t.Fatal(err)
			}
			_, standbys, err := q.Workers(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ok(online["sb"], standbys["sb"]) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: holder %+v, standby %+v", what, online["sb"], standbys["sb"])
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	stopA := start("sb/a")
	waitFor("a holds the host, no standby", func(h, s queue.HostInfo) bool { return h.Instance == "sb/a" && s.Instance == "" })
	start("sb/b")
	waitFor("b stands by", func(h, s queue.HostInfo) bool {
		return h.Instance == "sb/a" && s.Instance == "sb/b" && s.Version == "v-sb/b" && !s.StartedAt.IsZero()
	})
	stopA()
	waitFor("b took over and removed its report", func(h, s queue.HostInfo) bool { return h.Instance == "sb/b" && s.Instance == "" })
	stopC := start("sb/c")
	waitFor("c stands by", func(h, s queue.HostInfo) bool { return h.Instance == "sb/b" && s.Instance == "sb/c" })
	stopC()
	waitFor("c stopped and removed its report", func(h, s queue.HostInfo) bool { return h.Instance == "sb/b" && s.Instance == "" })
}

// TestStatusSaysWhatTheWorkerDoes: Options.Status (systemd's STATUS=
// through cmd/orderly) says that a worker consumes its host's orders, or
// stands by and for whom, and follows a takeover.
func TestStatusSaysWhatTheWorkerDoes(t *testing.T) {
	e := newEnv(t)
	start := func(instance string) (func(), <-chan string) {
		ch := make(chan string, 16)
		stop, _ := runWorker(t, worker.Options{Host: "st", Instance: instance, Heartbeat: 200 * time.Millisecond,
			AckWait: time.Second, ShutdownGrace: 5 * time.Second, Status: func(s string) {
				select {
				case ch <- s:
				default:
				}
			}}, e.store, e.q, testenv.Logger(t))
		return stop, ch
	}
	next := func(who string, ch <-chan string, want string) {
		t.Helper()
		select {
		case got := <-ch:
			if got != want {
				t.Fatalf("%s's status %q, want %q", who, got, want)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("%s reported no status; want %q", who, want)
		}
	}
	stopA, a := start("st/a")
	// A first worker whose read of the host's owner in PostgreSQL takes
	// longer than a heartbeat (200 ms: a loaded machine) takes the owner
	// to be another (heldElsewhere) and waits a lease as the standby of
	// a holder it cannot name before it takes the host; it says so.
	select {
	case got := <-a:
		if got == "standby: the lease of host st is held by " {
			next("a", a, "consuming the orders of host st")
		} else if got != "consuming the orders of host st" {
			t.Fatalf("a's status %q, want %q", got, "consuming the orders of host st")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("a reported no status")
	}
	_, b := start("st/b")
	next("b", b, "standby: the lease of host st is held by st/a")
	stopA()
	next("b", b, "consuming the orders of host st")
}

// TestStandbyCutOffSaysSo: a standby that NATS stops answering logged
// "stopped consuming the host's orders" (and its status said it takes
// the host again), as if it had served the host beside its worker. It
// says it could not take the host.
func TestStandbyCutOffSaysSo(t *testing.T) {
	store, _ := testenv.Store(t, testenv.Postgres(t))
	ns := testenv.NATSServer(t, &server.Options{})
	q := testenv.Queue(t, ns.ClientURL(), "test", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})
	opts := worker.Options{Host: "cut", Heartbeat: 200 * time.Millisecond, AckWait: time.Second, ShutdownGrace: 5 * time.Second}
	a := opts
	a.Instance = "cut/a"
	runWorker(t, a, store, q, testenv.Logger(t))
	testenv.WaitUntil(t, 10*time.Second, "a holds the host", func() bool {
		on, err := q.HostOnline(t.Context(), "cut")
		return err == nil && on
	})
	logs := &testenv.LogBuffer{}
	statuses := &testenv.LogBuffer{}
	b := opts
	b.Instance = "cut/b"
	b.Status = func(s string) { _, _ = statuses.Write([]byte(s + "\n")) }
	runWorker(t, b, store, q, testenv.LoggerTo(io.MultiWriter(logs, t.Output())))
	testenv.WaitUntil(t, 10*time.Second, "b stands by", func() bool { return strings.Contains(statuses.String(), "standby: ") })
	ns.Shutdown()
	testenv.WaitUntil(t, 30*time.Second, "b's line on losing NATS", func() bool {
		return strings.Contains(logs.String(), "could not take the host; trying again")
	})
	if strings.Contains(logs.String(), "stopped consuming") || strings.Contains(statuses.String(), "taking host cut again") {
		t.Fatalf("the standby says it consumed the host's orders:\n%s\n%s", logs.String(), statuses.String())
	}
	if !strings.Contains(statuses.String(), "could not take host cut; trying again: ") {
		t.Fatalf("the standby's status:\n%s", statuses.String())
	}
}

// TestStandbyWhoseLastReportWentUnansweredRemovesIt: a standby whose
// reports the server stored but answered only after their bound (a
// heartbeat) stops. Its removal names the revision it last heard, which
// the server refuses: the key is past it, at a report the standby never
// learned the revision of. It may not read its report back (the worker's
// own NATS permissions, natsembed.WorkerPermissions, which its connection
// has here): it writes it once more and removes that, and the hosts
// listing shows no standby, not the stopped one until the bucket's TTL
// (30 s here; docs/decisions.md, hE25).
func TestStandbyWhoseLastReportWentUnansweredRemovesIt(t *testing.T) {
	const host = "sbu"
	ns := testenv.NATSServer(t, &server.Options{Users: []*server.User{
		{Username: "test", Password: "test"},
		{Username: "worker", Password: "worker", Permissions: natsembed.WorkerPermissions(host)},
	}})
	store, _ := testenv.Store(t, testenv.Postgres(t))
	q := testenv.Queue(t, ns.ClientURL(), "test", queue.Options{AckWait: time.Second, LeaseTTL: 30 * time.Second}, nats.UserInfo("test", "test"))
	ctx := testenv.Context(t)
	runWorker(t, worker.Options{Host: host, Instance: host + "/a", Heartbeat: 200 * time.Millisecond,
		AckWait: time.Second, ShutdownGrace: 5 * time.Second}, store, q, testenv.Logger(t))

	// Its removal is a delete, the only write of a standby that names
	// the operation.
	addr, hold := testenv.HeldAnswersPath(t, ns.Addr().String(), []byte("KV-Operation: DEL"))
	nc, err := queue.Connect("nats://"+addr, "standby", append(testenv.NATSEvents(t, "standby"),
		nats.UserInfo("worker", "worker"), nats.CustomInboxPrefix(queue.WorkerInbox(host)))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	wq, err := queue.Bind(ctx, nc, queue.Options{AckWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var logs testenv.LogBuffer
	stop, _ := runWorker(t, worker.Options{Host: host, Instance: host + "/b", Heartbeat: 200 * time.Millisecond,
		AckWait: time.Second, ShutdownGrace: 5 * time.Second}, store, wq, testenv.LoggerTo(io.MultiWriter(&logs, t.Output())))
	standby := func() string {
		_, standbys, err := q.Workers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return standbys[host].Instance
	}
	testenv.WaitUntil(t, 10*time.Second, "b stands by", func() bool { return standby() == host+"/b" })
	// Stored and not answered within their bound, the reports; the
	// answers flow again from b's removal on.
	hold()
	testenv.WaitUntil(t, 10*time.Second, "a report of b's unanswered", func() bool {
		return strings.Contains(logs.String(), `instance=sbu/b error="standby report of host sbu: context deadline exceeded"`)
	})
	stop()
	testenv.WaitUntil(t, 10*time.Second, "b's report removed", func() bool { return standby() == "" })
}
