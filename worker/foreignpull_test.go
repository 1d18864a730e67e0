package worker_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/natsembed"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestForeignPullOnAClusterDoesNotStallAnIdleHost: on a NATS cluster, a
// pull request the worker never made waits on its host's consumer ahead
// of the worker's own and takes the next order, which the worker never
// gets. In the fault suite it was a pull of the worker's own iterator that
// a frozen server read, once thawed, from the socket of the connection the
// worker had left it by, and that the consumer's leader, through the
// accounts' service import, could not tell dead (decisions.md, hB22); here
// it is another client's fetch, which the consumer treats alike. The
// worker, idle and with no trouble seen (no missed heartbeat, no
// unconfirmed ack, no reconnect), had nothing to make it look and waited
// for the ack timer (30 s): on a cluster it checks its consumer now and
// then, finds it counting a message as held by nobody it serves, and
// rewinds.
func TestForeignPullOnAClusterDoesNotStallAnIdleHost(t *testing.T) {
	const host = "foreign"
	urls := natsCluster(t, 3)
	store, _ := testenv.Store(t, testenv.Postgres(t))
	qopts := queue.Options{AckWait: slowAckWait, LeaseTTL: 2 * time.Second, Replicas: 3}
	e := &env{t: t, store: store, q: testenv.Queue(t, urls[0], "test", qopts)}
	wq := testenv.Queue(t, urls[1], "worker", qopts)
	runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: slowAckWait,
		ShutdownGrace: 5 * time.Second}, store, wq, testenv.Logger(t))
	// The worker runs an order: its tenure's first check is behind it,
	// and it has nothing to suspect.
	e.waitStatus(e.submit(host, "true"), order.StatusSucceeded)

	// Another client's pull request, on the third server.
	js := testenv.JetStream(t, urls[2], "foreign")
	cons, err := js.Consumer(t.Context(), queue.OrdersStream, queue.ConsumerName(host))
	if err != nil {
		t.Fatal(err)
	}
	taken := pendingPull(t, cons)
	// The worker's own pull request, older, expires meanwhile and the
	// worker makes it again, behind the other one: nothing tells when, so
	// the test lets the expiry pass.
	time.Sleep(queue.HostPullExpiry + time.Second)

	submitted := time.Now()
	a := e.submit(host, "true")
	select {
	case id := <-taken:
		if id != a {
			t.Fatalf("the other pull request took %s, want the order (%s): the scenario did not happen", id, a)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the other pull request took nothing: the scenario did not happen")
	}
	testenv.WaitUntil(t, 20*time.Second, "the order another pull request took runs, before the ack timer ("+slowAckWait.String()+")", func() bool {
		o, err := store.GetOrder(t.Context(), a)
		return err == nil && o.Status == order.StatusSucceeded
	})
	t.Logf("the order ran %s after it was submitted", time.Since(submitted).Round(10*time.Millisecond))
}

// TestDeadPullOnAClusterDoesNotStallAnIdleHost is
// TestForeignPullOnAClusterDoesNotStallAnIdleHost with orderly's
// accounts and the pull request dead, as the thawed ones are: a
// connection in the host's worker account, on a server that does not
// lead the consumer, pulls and goes away. Through the account's service
// import the leader keeps its pull request (decisions.md, hM20, hB22),
// which takes the next order for nobody.
func TestDeadPullOnAClusterDoesNotStallAnIdleHost(t *testing.T) {
	const host = "dead"
	creds, err := natsembed.EnsureClusterCredentials(filepath.Join(t.TempDir(), "creds"), []string{host})
	if err != nil {
		t.Fatal(err)
	}
	urls := natsClusterConf(t, 3, creds.AccountsConfig())
	connect := func(url, name, seed, inbox string) *nats.Conn {
		nk, err := nats.NkeyOptionFromSeed(seed)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := queue.Connect(url, name, nk, nats.CustomInboxPrefix(inbox))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	store, _ := testenv.Store(t, testenv.Postgres(t))
	qopts := queue.Options{AckWait: slowAckWait, LeaseTTL: 2 * time.Second, Replicas: 3}
	q, err := queue.New(t.Context(), connect(urls[0], "api", creds.API, queue.APIInbox), qopts)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, store: store, q: q}
	cons, err := q.HostConsumer(t.Context(), host)
	if err != nil {
		t.Fatal(err)
	}
	wq, err := queue.Bind(t.Context(), connect(urls[2], "worker", creds.Workers[host], queue.WorkerInbox(host)), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: slowAckWait,
		ShutdownGrace: 5 * time.Second}, store, wq, testenv.Logger(t))
	e.waitStatus(e.submit(host, "true"), order.StatusSucceeded)

	// The pull request, from a connection of the worker's account that
	// is gone once the consumer counts it waiting, on a server that does
	// not lead the consumer (the leader itself sees the connection go).
	info, err := cons.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		t.Fatal("the host's consumer has no leader after running an order")
	}
	off := urls[0]
	if info.Cluster.Leader == "n1" { // natsClusterConf names them n1, n2, n3
		off = urls[1]
	}
	waiting := info.NumWaiting
	gone := connect(off, "gone", creds.Workers[host], queue.WorkerInbox(host))
	inbox := gone.NewInbox()
	if _, err := gone.SubscribeSync(inbox); err != nil {
		t.Fatal(err)
	}
	next := "$JS.API.CONSUMER.MSG.NEXT." + queue.OrdersStream + "." + queue.ConsumerName(host)
	if err := gone.PublishRequest(next, inbox, []byte(`{"batch":1,"expires":60000000000}`)); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, 10*time.Second, "the pull request waits", func() bool {
		info, err := cons.Info(t.Context())
		return err == nil && info.NumWaiting > waiting
	})
	gone.Close()
	// The worker's own pull request, older, expires meanwhile and the
	// worker makes it again, behind the dead one.
	time.Sleep(queue.HostPullExpiry + time.Second)

	submitted := time.Now()
	a := e.submit(host, "true")
	testenv.WaitUntil(t, 10*time.Second, "the dead pull request takes the order", func() bool {
		info, err := cons.Info(t.Context())
		return err == nil && info.NumAckPending == 1
	})
	testenv.WaitUntil(t, 20*time.Second, "the order a dead pull request took runs, before the ack timer ("+slowAckWait.String()+")", func() bool {
		o, err := store.GetOrder(t.Context(), a)
		return err == nil && o.Status == order.StatusSucceeded
	})
	took := time.Since(submitted)
	t.Logf("the order ran %s after it was submitted", took.Round(10*time.Millisecond))
	// Its delivery to the worker comes with the rewind, which waits out
	// the worker's stopped pull requests (6 s on a cluster, hM20).
	if took < queue.HostPullExpiry {
		t.Fatalf("the order ran %s after its submit, too soon for a rewind: the dead pull request did not take it; the scenario did not happen", took)
	}
}

// natsCluster starts n routed nats-servers with JetStream, waits until
// they have a meta leader and returns their client URLs.
func natsCluster(t *testing.T, n int) []string {
	t.Helper()
	return natsClusterConf(t, n, "")
}

// natsClusterConf is natsCluster with accounts, nats-server's
// configuration of the servers' accounts ("" for none).
func natsClusterConf(t *testing.T, n int, accounts string) []string {
	t.Helper()
	ports := make([]int, n)
	routes := make([]string, n)
	for i := range n {
		ports[i] = testenv.FreePort(t)
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", ports[i])
	}
	servers := make([]*server.Server, n)
	urls := make([]string, n)
	for i := range n {
		var o server.Options
		if accounts != "" {
			if err := o.ProcessConfigString(accounts); err != nil {
				t.Fatal(err)
			}
		}
		o.ServerName = fmt.Sprintf("n%d", i+1)
		o.Cluster = server.ClusterOpts{Name: "worker-test", Host: "127.0.0.1", Port: ports[i]}
		o.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		servers[i] = testenv.NATSServer(t, &o)
		urls[i] = servers[i].ClientURL()
	}
	testenv.WaitUntil(t, 30*time.Second, "the cluster's JetStream has a meta leader", func() bool {
		leader, current := false, true
		for _, s := range servers {
			leader = leader || s.JetStreamIsLeader()
			current = current && s.JetStreamIsCurrent()
		}
		return leader && current
	})
	return urls
}
