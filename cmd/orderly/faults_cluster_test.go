package main

// Fault test on a clustered NATS (issue 11): three nats-server processes
// on loopback forming one JetStream cluster, orderly's streams and bucket
// at three replicas (nats.replicas: 3), the fault suite's load on 8 hosts,
// and the stream leader killed and restarted under it; then two nodes at
// once. checkContract judges it like every other fault scenario.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/natsembed"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// clusterRecoveryBound is how long a host may wait for its next order
// once the cluster has leaders again: the fault suite's bound plus 5 s.
// Acks lost during an election used to leave a host waiting for the
// 30 s ack timer (22–24 s after the election, about one run in seven);
// since the worker has each ack confirmed (worker/ack.go) an unconfirmed
// one starts the stall check, and the slowest host recovered within
// 1.4–5.7 s in six runs checked against a 10 s bound. The 5 s margin
// covers the check's worst case (confirmation timeout 2 s, two idle
// checks 2 s apart, a pull request expiring every 5 s) on a loaded
// machine, and stays well under the ack timer this test guards against.
const clusterRecoveryBound = recoveryBound + 5*time.Second

// natsCluster is a nats-server cluster on loopback, each node a natsServer
// of the fault suite (kill -9 and restart on the same ports and store).
type natsCluster struct {
	t     testing.TB
	names []string
	nodes []*natsServer
	// creds are the seeds of every role, each in its account: every
	// client connects with its role's.
	creds *natsembed.Credentials
}

// startNATSClusterAccounts starts n clustered nodes with JetStream,
// random ports and a store directory each, as deploy/nats runs them:
// every node includes auth.conf, orderly's accounts (natsembed's layout:
// JetStream and the API in ORDERLY, each host's workers in WORKER_<host>
// importing only their subjects, the submitters in SUBMITTERS) with a
// fresh seed per role and per host of hosts, written in dir/nats-creds.
// It waits until each node reports healthy (a clustered server does once
// it knows the meta leader) and the cluster can make a replicated stream.
func startNATSClusterAccounts(t testing.TB, dir string, n int, hosts []string) *natsCluster {
	t.Helper()
	return startNATSClusterAccountsConf(t, dir, n, hosts, "")
}

// startNATSClusterAccountsConf is startNATSClusterAccounts with extra
// appended to each node's configuration.
func startNATSClusterAccountsConf(t testing.TB, dir string, n int, hosts []string, extra string) *natsCluster {
	t.Helper()
	creds, err := natsembed.EnsureClusterCredentials(filepath.Join(dir, "nats-creds"), hosts)
	if err != nil {
		t.Fatal(err)
	}
	c := startNATSClusterWith(t, dir, n, extra, creds)
	// The accounts are on: a client without a seed is refused, so a
	// process of the test that connected without its role's seed would
	// fail, not pass on an open cluster.
	if nc, err := nats.Connect(c.url(), nats.NoReconnect()); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("a client without a seed connected to the cluster with the accounts: %v", err)
	}
	return c
}

// startNATSClusterWith starts the cluster with orderly's accounts for
// creds.
func startNATSClusterWith(t testing.TB, dir string, n int, extra string, creds *natsembed.Credentials) *natsCluster {
	t.Helper()
	bin, err := natsServerBin()
	if err != nil {
		t.Fatal(err)
	}
	c := &natsCluster{t: t, creds: creds}
	if err := os.WriteFile(filepath.Join(dir, "auth.conf"), []byte(creds.AccountsConfig()), 0o644); err != nil {
		t.Fatal(err)
	}
	// As deploy/nats/nats-*.conf: the same auth.conf on every node.
	extra = "include \"auth.conf\"\n" + extra
	routePorts := make([]int, n)
	var routes []string
	for i := range n {
		routePorts[i] = freePort(t)
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", routePorts[i]))
	}
	// A name of its own: a route that reaches another test process's
	// cluster (a port it picked as free, taken since) is refused, not
	// joined, which would make one cluster of two.
	cluster := fmt.Sprintf("orderly-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		node := &natsServer{t: t, bin: bin, conf: filepath.Join(dir, "nats-"+name+".conf"),
			logPath: filepath.Join(dir, "nats-"+name+".log"), port: freePort(t), httpPort: freePort(t)}
		// As deploy/nats/nats-*.conf: every write fsynced before it is
		// acknowledged, so a kill -9 loses nothing acknowledged.
		conf := fmt.Sprintf(`server_name: %s
listen: "127.0.0.1:%d"
http: "127.0.0.1:%d"
jetstream {
  store_dir: %q
  sync_interval: always
}
cluster {
  name: %s
  listen: "127.0.0.1:%d"
  routes: [%s]
}
%s`, name, node.port, node.httpPort, filepath.Join(dir, "js-"+name), cluster, routePorts[i], strings.Join(routes, ", "), extra)
		if err := os.WriteFile(node.conf, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		c.names = append(c.names, name)
		c.nodes = append(c.nodes, node)
	}
	c.start(c.names...)
	c.waitReplicated()
	return c
}

// waitReplicated waits until the cluster can create a replicated stream:
// /healthz answers before the routes and the meta leader are settled, and
// the API, started then, timed out creating its R3 streams.
func (c *natsCluster) waitReplicated() {
	c.t.Helper()
	nc, err := nats.Connect(c.url(), c.apiOptions()...)
	if err != nil {
		c.t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "READY_PROBE", Subjects: []string{"ready.probe"},
			Replicas: len(c.nodes), Storage: jetstream.MemoryStorage})
		if err == nil {
			err = js.DeleteStream(ctx, "READY_PROBE")
		}
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the cluster cannot create a replicated stream: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// clusterAttemptTimeout bounds one attempt of natsCluster.retry.
const clusterAttemptTimeout = 15 * time.Second

// retry runs step until it succeeds, each attempt bounded by
// clusterAttemptTimeout, for up to two minutes, as the API's start does
// (backend.go: each JetStream request bounded, the step tried again by
// waitForDependencies). A JetStream API request that reaches a cluster
// while its meta group changes leader is answered by no server
// (nats-server's jsStreamCreateRequest: only the meta leader answers,
// and the others say "no leader" only once none was known for a while),
// and a fresh cluster on a loaded machine can change its meta leader
// after answering the readiness probe (waitReplicated). With nothing but
// testenv.Context's two minutes for a bound, one such request held
// queue.New for 120 s and failed the test (TestLiveRollupOnNATSCluster,
// in a CI, creating ORDERLY_ORDERS). step must be safe to repeat.
func (c *natsCluster) retry(what string, step func(ctx context.Context) error) {
	c.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(c.t.Context(), clusterAttemptTimeout)
		err := step(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) || c.t.Context().Err() != nil {
			c.t.Fatalf("%s on the NATS cluster, %d attempts: %v", what, attempt, err)
		}
		c.t.Logf("%s on the NATS cluster, attempt %d: %v; trying again", what, attempt, err)
		select {
		case <-c.t.Context().Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// openQueue is queue.New on the cluster over nc, made as the API's start
// makes it (retry).
func (c *natsCluster) openQueue(nc *nats.Conn, opts queue.Options) *queue.Queue {
	c.t.Helper()
	var q *queue.Queue
	c.retry("queue.New", func(ctx context.Context) error {
		var err error
		q, err = queue.New(ctx, nc, opts)
		return err
	})
	return q
}

// apiOptions connect as the API (orderly's account, where JetStream
// is: the test's own inspection and queue).
func (c *natsCluster) apiOptions() []nats.Option {
	return seedOptions(c.t, c.creds.API, queue.APIInbox)
}

// jetStream is the test's own view of JetStream through url (every node
// or one), as the API.
func (c *natsCluster) jetStream(url, name string) jetstream.JetStream {
	c.t.Helper()
	return testenv.JetStream(c.t, url, name, c.apiOptions()...)
}

// seedOptions connect with the nkey seed in file and the inbox prefix
// its role may subscribe to.
func seedOptions(t testing.TB, file, inbox string) []nats.Option {
	t.Helper()
	nk, err := nats.NkeyOptionFromSeed(file)
	if err != nil {
		t.Fatal(err)
	}
	return []nats.Option{nk, nats.CustomInboxPrefix(inbox)}
}

// url lists every node, so that clients fail over between them.
func (c *natsCluster) url() string {
	var urls []string
	for _, n := range c.nodes {
		urls = append(urls, n.url())
	}
	return strings.Join(urls, ",")
}

func (c *natsCluster) node(name string) *natsServer {
	i := slices.Index(c.names, name)
	if i < 0 {
		c.t.Fatalf("no NATS node %q", name)
	}
	return c.nodes[i]
}

// start starts the named nodes together, then waits for each to be
// healthy: a node alone cannot be, since it needs a quorum of the cluster.
func (c *natsCluster) start(names ...string) {
	c.t.Helper()
	for _, name := range names {
		n := c.node(name)
		n.proc = startFaultProc(c.t, "nats-server "+name, n.logPath, []string{"PATH=/usr/bin:/bin"}, n.bin, "-c", n.conf)
	}
	for _, name := range names {
		n := c.node(name)
		waitHTTPOK(c.t, fmt.Sprintf("http://127.0.0.1:%d/healthz", n.httpPort), 60*time.Second, n.proc)
	}
}

// streamLeader is the server name of stream's leader, "" while it has
// none (an election). A stream without a leader does not answer, so the
// short timeout is what bounds the measurement's error.
func streamLeader(ctx context.Context, js jetstream.JetStream, stream string) string {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return ""
	}
	info := st.CachedInfo()
	if info.Cluster == nil {
		return ""
	}
	return info.Cluster.Leader
}

// waitNewLeader waits until stream has a leader other than old and
// returns it with how long that took.
func waitNewLeader(t testing.TB, js jetstream.JetStream, stream, old string) (string, time.Duration) {
	t.Helper()
	began := time.Now()
	var leader string
	waitUntil(t, 60*time.Second, "a new leader of "+stream, func() bool {
		leader = streamLeader(t.Context(), js, stream)
		return leader != "" && leader != old
	})
	return leader, time.Since(began)
}

// waitConsumerLeader waits until the orders stream's consumer name has a
// leader other than old.
func waitConsumerLeader(t testing.TB, js jetstream.JetStream, name, old string) {
	t.Helper()
	waitUntil(t, 60*time.Second, "a new leader of consumer "+name, func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		c, err := js.Consumer(ctx, queue.OrdersStream, name)
		if err != nil {
			return false
		}
		cl := c.CachedInfo().Cluster
		return cl != nil && cl.Leader != "" && cl.Leader != old
	})
}

// waitMetaLeader waits until the cluster's meta group has a leader: only
// it answers account information, and only it creates and deletes
// consumers, which a worker's rewind does.
func waitMetaLeader(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	waitUntil(t, 60*time.Second, "a meta leader", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err == nil
	})
}

// newClusterFaultStack is newFaultStack on a NATS cluster with orderly's
// accounts for hosts: the same PostgreSQL, config (plus nats.replicas: 3)
// and `orderly api`, with the API connected to every node, each process
// with its role's seed.
func newClusterFaultStack(t *testing.T, hosts []string) (*faultStack, *natsCluster) {
	t.Helper()
	var c *natsCluster
	s := newFaultStackOn(t, "ofc-", func(s *faultStack) string {
		c = startNATSClusterAccounts(t, s.dir, 3, hosts)
		s.creds = c.creds
		return c.url()
	}, func(conf string) string {
		return strings.Replace(conf, "nats:\n", "nats:\n  replicas: 3\n", 1)
	})
	return s, c
}

// answeredWithin returns the submissions sent at or after from and
// answered before to.
func answeredWithin(l *faultLoad, from, to time.Time) []faultOrder {
	var out []faultOrder
	for _, o := range l.snapshot() {
		if !o.sent.Before(from) && !o.answered.IsZero() && o.answered.Before(to) {
			out = append(out, o)
		}
	}
	return out
}

// TestFaultsNATSCluster runs the fault load on 8 hosts against a 3-node
// NATS cluster with every stream at three replicas. It kills the orders
// stream's leader with SIGKILL and restarts it, several times: while one
// node is down (once a new leader is elected) every submission must be
// accepted. Then it kills two nodes at once: without a quorum nothing can
// be stored, so every submission must answer 503, and what was recorded
// then must still run once the nodes are back. The contract check then
// wants 0 lost, 0 duplicate executions, 0 order violations, as always.
// `make soak` (ORDERLY_SOAK=1) runs 15 leader kills instead of 3.
func TestFaultsNATSCluster(t *testing.T) {
	hosts := []string{"h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8"}
	rounds := 3
	if os.Getenv("ORDERLY_SOAK") == "1" {
		rounds = 15
	}
	s, c := newClusterFaultStack(t, hosts)
	for _, h := range hosts {
		s.startWorker(h)
	}
	l := newFaultLoad(s, hosts...)
	l.start(4, faultPeriod)
	defer l.stop()
	l.waitStarts(t, 8, 60*time.Second)
	r := &faultRun{t: t, s: s, l: l, hosts: hosts}

	js := c.jetStream(c.url(), "cluster-check")
	// More copies than the cluster has servers is refused with the
	// setting's name, and changes nothing.
	if _, err := queue.New(t.Context(), js.Conn(), queue.Options{Replicas: 5}); err == nil || !strings.Contains(err.Error(), "nats.replicas is 5") {
		t.Errorf("R5 on a 3-node cluster: %v, want an error naming nats.replicas", err)
	}
	faultAll := func(what string) {
		for _, h := range hosts {
			r.fault(what, h)
		}
	}

	var elections []time.Duration
	var oneDown []faultOrder
	for i := range rounds {
		if i > 0 {
			r.untilRecovered(time.Second, 20*time.Second, time.Second)
		}
		old := streamLeader(t.Context(), js, queue.OrdersStream)
		if old == "" {
			_, _ = waitNewLeader(t, js, queue.OrdersStream, "")
			old = streamLeader(t.Context(), js, queue.OrdersStream)
		}
		c.node(old).kill9()
		leader, took := waitNewLeader(t, js, queue.OrdersStream, old)
		elections = append(elections, took)
		// The hosts bucket (leases), each host's consumer and the meta
		// group (when the dead node led it) elect on their own; orderly's
		// recovery is measured from when all have a leader again:
		// JetStream's elections (4-9 s after a leader crash) are not
		// orderly's to bound.
		hostsLeader, _ := waitNewLeader(t, js, "KV_"+queue.HostsBucket, old)
		for _, h := range hosts {
			waitConsumerLeader(t, js, queue.ConsumerName(h), old)
		}
		waitMetaLeader(t, js)
		faultAll("stream leader " + old + " killed, re-elected")
		t.Logf("round %d: killed %s, the orders stream's leader; %s leads it after %s (hosts bucket: %s)",
			i+1, old, leader, took.Round(time.Millisecond), hostsLeader)
		// One node down, a leader elected: every submission must succeed.
		// The first second lets clients of the dead node reconnect.
		from := time.Now().Add(time.Second)
		pause(t.Context(), 4*time.Second)
		oneDown = append(oneDown, answeredWithin(l, from, time.Now())...)
		c.start(old)
	}
	r.untilRecovered(time.Second, 20*time.Second, time.Second)

	// Two nodes down: no quorum, nothing can be stored.
	leader := streamLeader(t.Context(), js, queue.OrdersStream)
	other := c.names[0]
	for _, n := range c.names {
		if n != leader && n != "" {
			other = n
			break
		}
	}
	if leader == "" || leader == other {
		leader = c.names[len(c.names)-1]
	}
	c.node(leader).kill9()
	c.node(other).kill9()
	down := time.Now()
	waitUntil(t, 60*time.Second, "four submissions answered with two nodes down", func() bool {
		return len(answeredWithin(l, down, time.Now())) >= 4
	})
	twoDown := answeredWithin(l, down, time.Now())
	c.start(leader, other)
	_, _ = waitNewLeader(t, js, queue.OrdersStream, "")
	_, _ = waitNewLeader(t, js, "KV_"+queue.HostsBucket, "")
	waitMetaLeader(t, js)
	faultAll("quorum back")
	r.untilRecovered(time.Second, 30*time.Second, 2*time.Second)
	l.stop()
	t.Logf("drained in %s", s.waitDrained(drainBound).Round(10*time.Millisecond))
	// Recovery is held to clusterRecoveryBound (see there).
	checkContract(t, s, l, nil)
	var slowest time.Duration
	for _, f := range r.faults {
		next, ok := l.tails[f.host].firstStartAfter(f.at)
		if !ok {
			t.Errorf("%s on %s: no order started on the host afterwards", f.what, f.host)
			continue
		}
		d := next.at.Sub(f.at)
		slowest = max(slowest, d)
		if d > clusterRecoveryBound {
			t.Errorf("%s on %s: next order started %s later (bound %s)", f.what, f.host, d.Round(10*time.Millisecond), clusterRecoveryBound)
		}
	}
	t.Logf("slowest host recovery after the cluster had leaders again: %s", slowest.Round(10*time.Millisecond))

	slices.Sort(elections)
	t.Logf("orders stream leader re-election after kill -9 of the leader: %d kills, min %s, median %s, max %s",
		len(elections), elections[0].Round(time.Millisecond), elections[len(elections)/2].Round(time.Millisecond),
		elections[len(elections)-1].Round(time.Millisecond))
	refused := 0
	for _, o := range oneDown {
		if !o.accepted() {
			refused++
			t.Errorf("one node down: %s to %s answered %d %s", o.tag, o.host, o.code, o.err)
		}
	}
	codes := map[int]int{}
	for _, o := range twoDown {
		codes[o.code]++
		if o.code != http.StatusServiceUnavailable {
			t.Errorf("two nodes down: %s to %s answered %d, want 503 (%s)", o.tag, o.host, o.code, o.err)
		}
	}
	t.Logf("one node down: %d submissions, %d refused; two nodes down: %d submissions, status counts %v",
		len(oneDown), refused, len(twoDown), codes)
}
