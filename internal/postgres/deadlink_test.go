package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
)

const deadLinkInner = "ORDERLY_DEAD_LINK_INNER"

// deadLinkSetup gives the test a network namespace of its own with a
// second one beside it (held by a sleep), joined by a veth pair:
// 10.77.0.1 here, 10.77.0.2 there. A blackhole route there for 10.77.0.1
// then cuts the link as a dead machine or a partition does: whatever is
// sent is neither acknowledged nor refused.
const deadLinkSetup = `set -eu
exec unshare -n sh -c '
set -eu
ip link set lo up
ip link add v0 type veth peer name v1
ip addr add 10.77.0.1/24 dev v0
ip link set v0 up
unshare -n sleep 300 &
P=$!
while [ "$(readlink /proc/$P/ns/net)" = "$(readlink /proc/self/ns/net)" ]; do sleep 0.05; done
ip link set v1 netns $P
nsenter -t $P -n sh -c "ip link set lo up; ip addr add 10.77.0.2/24 dev v1; ip link set v1 up"
rc=0
ORDERLY_FAR_PID=$P "$@" || rc=$?
kill $P
exit $rc' sh "$@"
`

// TestStatementOverADeadLinkEnds: a TCP connection to a PostgreSQL whose
// machine is gone (or cut off) is neither refused nor closed. With
// Linux's defaults a statement sent into it was retransmitted for about
// 15 minutes before it failed, and an answer awaited on it for 2.5 minutes
// (Go's keepalive), though the DSN's next host (a promoted standby)
// answered at once: a worker's claim or result write, retried only once
// its statement fails, held its host that long. The pool's connections
// now give up after 20 s without the server's kernel acknowledging
// anything, and the next try goes to the next host. Both ways a link
// dies are provoked: before a statement is sent, and while its answer is
// awaited (cut once pg_stat_activity shows it running).
func TestStatementOverADeadLinkEnds(t *testing.T) {
	if os.Getenv(deadLinkInner) == "" {
		testenv.NeedRootTools(t, "cutting a link to PostgreSQL", "network namespaces and a veth pair",
			"unshare", "nsenter", "ip")
		testenv.RerunInMountNamespace(t, deadLinkSetup, nil, "TestStatementOverADeadLinkEnds", deadLinkInner)
		return
	}
	ctx := testenv.Context(t)
	direct := testenv.Postgres(t)
	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	sock := filepath.Join(q.Get("host"), ".s.PGSQL."+q.Get("port"))
	far := forwardPG(t, listenInNamespace(t, os.Getenv("ORDERLY_FAR_PID"), "10.77.0.2:5432"), sock)
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	near := forwardPG(t, nl, sock)
	_, admin := testenv.Store(t, direct)

	// One connection, to the first host while it answers.
	dsn := fmt.Sprintf("host=10.77.0.2,127.0.0.1 port=5432,%d user=%s dbname=%s sslmode=disable connect_timeout=2 pool_max_conns=1",
		nl.Addr().(*net.TCPAddr).Port, u.User.Username(), strings.TrimPrefix(u.Path, "/"))
	store, pool := testenv.Store(t, dsn)
	if _, err := pool.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if far.Load() != 1 || near.Load() != 0 {
		t.Fatalf("connections: %d to the first host, %d to the second; want 1 and 0", far.Load(), near.Load())
	}

	// Cut, then a statement: sent into the dead link.
	blackhole(t, "add")
	answered(t, "a statement sent into the dead link", func(ctx context.Context) error {
		_, err := store.GetOrder(ctx, order.NewID())
		return err
	})
	if near.Load() != 1 {
		t.Fatalf("%d connections to the second host, want 1", near.Load())
	}

	// The first host is back; a statement is sent while it answers, and
	// the link dies while the statement runs: its answer goes nowhere.
	blackhole(t, "del")
	pool.Reset()
	if _, err := pool.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if far.Load() != 2 {
		t.Fatalf("%d connections to the first host, want 2", far.Load())
	}
	go func() {
		testenv.WaitUntil(t, 30*time.Second, "the statement to run", func() bool {
			var n int
			err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(2)%'").Scan(&n)
			return err == nil && n > 0
		})
		blackhole(t, "add")
	}()
	answered(t, "a statement whose answer the dead link lost", func(ctx context.Context) error {
		_, err := pool.Exec(ctx, "SELECT pg_sleep(2)")
		if err == nil {
			return errors.New("answered over the dead link")
		}
		if _, err := store.GetOrder(ctx, order.NewID()); !errors.Is(err, order.ErrNotFound) {
			return err
		}
		return nil
	})
}

// answered calls try until it returns nil or order.ErrNotFound (the
// server answered), as the worker retries a statement the database did
// not answer. It fails the test when a try ends by the deadline of 90 s
// rather than by the connection failing.
func answered(t *testing.T, what string, try func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	start := time.Now()
	for {
		err := try(ctx)
		if err == nil || errors.Is(err, order.ErrNotFound) {
			t.Logf("%s: answered after %.1f s", what, time.Since(start).Seconds())
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("%s: still waiting after 90 s: %v", what, err)
		}
		if order.ErrorCode(err) != order.CodeUnavailable && !strings.Contains(err.Error(), "timed out") {
			t.Logf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// blackhole adds or deletes, in the far namespace, the route that drops
// what it sends back.
func blackhole(t *testing.T, op string) {
	t.Helper()
	out, err := exec.Command("nsenter", "-t", os.Getenv("ORDERLY_FAR_PID"), "-n",
		"ip", "route", op, "blackhole", "10.77.0.1/32").CombinedOutput()
	if err != nil {
		t.Fatalf("ip route %s blackhole: %v: %s", op, err, out)
	}
}

// listenInNamespace listens on addr in the network namespace of process
// pid: the socket belongs to the namespace it was made in.
func listenInNamespace(t *testing.T, pid, addr string) net.Listener {
	t.Helper()
	type res struct {
		ln  net.Listener
		err error
	}
	ch := make(chan res, 1)
	go func() {
		// Never unlocked: the thread ends with this goroutine, in the
		// other namespace, instead of running anything else there.
		runtime.LockOSThread()
		f, err := os.Open("/proc/" + pid + "/ns/net")
		if err != nil {
			ch <- res{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- res{err: err}
			return
		}
		ln, err := net.Listen("tcp", addr)
		ch <- res{ln, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.ln
}

// forwardPG joins each connection accepted on ln to PostgreSQL's socket
// and counts them.
func forwardPG(t *testing.T, ln net.Listener, sock string) *atomic.Int64 {
	var n atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("unix", sock)
			if err != nil {
				c.Close()
				continue
			}
			n.Add(1)
			mu.Lock()
			open = append(open, c, up)
			mu.Unlock()
			for _, p := range [][2]net.Conn{{c, up}, {up, c}} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, _ = io.Copy(p[0], p[1])
					p[0].Close()
					p[1].Close()
				}()
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return &n
}
