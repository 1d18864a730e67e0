package worker_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
	"github.com/orderly-run/orderly/worker/executor"
)

// TestStandbyTakesTheHostOfAHolderThatDiesAtOnce: a worker waits as the
// standby of a holder that the host's owner in PostgreSQL records as a
// process of this machine (here a child of the test), under a lease of
// a minute that nobody renews. Frozen (SIGSTOP), the holder lives: the
// standby leaves it the host through several of its reports. Killed
// (SIGKILL), it is known to have exited, and the standby takes the key
// at once, on the revision read, as a worker restarted there would: it
// waited for the server to expire the key, a lease after it was written
// (an operator's second worker for fail-over on the same machine took
// over no faster than the lease; docs/decisions.md, hE29 and hE30).
func TestStandbyTakesTheHostOfAHolderThatDiesAtOnce(t *testing.T) {
	e := newEnv(t)
	ctx := testenv.Context(t)
	ns := testenv.NATSServer(t, &server.Options{})
	const lease = time.Minute
	opts := queue.Options{AckWait: time.Second, LeaseTTL: lease}
	e.q = testenv.Queue(t, ns.ClientURL(), "api", opts) // the orders are published here
	const host = "dies"

	holder, exited := holdByProcess(t, ctx, e, ns.ClientURL(), opts, host)
	id := e.submit(host, "true")
	var logs testenv.LogBuffer
	wq := testenv.Queue(t, ns.ClientURL(), host+"-new", opts)
	runWorker(t, worker.Options{Host: host, Instance: host + "/new", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, e.store, wq, testenv.LoggerTo(io.MultiWriter(&logs, t.Output())))
	testenv.WaitUntil(t, 20*time.Second, "the worker waits as standby", func() bool {
		return strings.Contains(logs.String(), "waiting as standby")
	})

	// Frozen: alive. Three of the standby's reports after the freeze,
	// each a heartbeat, and the host still the holder's.
	if err := holder.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, 5*time.Second, "the holder stopped", func() bool { return processState(holder.Process.Pid) == "T" })
	frozen := time.Now()
	reports := 0
	var seen time.Time
	testenv.WaitUntil(t, 20*time.Second, "three standby reports after the freeze", func() bool {
		_, standbys, err := wq.WorkersOf(ctx, host)
		if s, ok := standbys[host]; err == nil && ok && s.LastSeen.After(frozen) && !s.LastSeen.Equal(seen) {
			seen = s.LastSeen
			reports++
		}
		return reports >= 3
	})
	if o, err := e.store.GetOrder(ctx, id); err != nil || o.Status != order.StatusQueued || strings.Contains(logs.String(), "took the host") {
		t.Fatalf("the standby took the host of a frozen (live) holder: order %v (%v):\n%s", o.Status, err, logs.String())
	}

	// Killed: gone.
	killed := time.Now()
	if err := holder.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited
	e.waitStatus(id, order.StatusSucceeded)
	took := time.Since(killed)
	if took > lease/2 {
		t.Fatalf("the standby took the host %s after its holder's kill, under a lease of %s", took, lease)
	}
	t.Logf("the standby took the host and ran its order %s after its holder's kill", took.Round(time.Millisecond))
}

// processOwner is the owner record of the process pid of this machine
// and pid namespace, as executor.Self would make it in that process.
func processOwner(t *testing.T, pid int) postgres.Owner {
	t.Helper()
	self, err := executor.Self()
	if err != nil {
		t.Fatal(err)
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command's ")": state is the first, starttime the 20th.
	start, err := strconv.ParseUint(string(bytes.Fields(stat[bytes.LastIndexByte(stat, ')')+1:])[19]), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return postgres.Owner{PID: pid, Start: start, Boot: self.BootID, PidNS: self.PidNS}
}

// TestStandbyWatchCostsOnePidfd: a standby's wait for a live holder
// (the host's owner recorded as a process of this machine) holds one
// pidfd of the holder's process, the same one heartbeat after heartbeat,
// and no more goroutines as the heartbeats go by; once the holder is
// killed and the standby took the host, it holds none. A watch made
// again at every refused try (every heartbeat) would leak a pidfd and
// its goroutine per heartbeat.
func TestStandbyWatchCostsOnePidfd(t *testing.T) {
	e := newEnv(t)
	ctx := testenv.Context(t)
	ns := testenv.NATSServer(t, &server.Options{})
	const lease = time.Minute
	opts := queue.Options{AckWait: time.Second, LeaseTTL: lease}
	e.q = testenv.Queue(t, ns.ClientURL(), "api", opts)
	const host = "watched"

	holder, exited := holdByProcess(t, ctx, e, ns.ClientURL(), opts, host)
	id := e.submit(host, "true")
	// This process's pidfds before the standby: os/exec's of the holder.
	base := pidfds(t)
	var logs testenv.LogBuffer
	wq := testenv.Queue(t, ns.ClientURL(), host+"-new", opts)
	const heartbeat = 100 * time.Millisecond
	runWorker(t, worker.Options{Host: host, Instance: host + "/new", Heartbeat: heartbeat, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, e.store, wq, testenv.LoggerTo(io.MultiWriter(&logs, t.Output())))
	testenv.WaitUntil(t, 20*time.Second, "the worker waits as standby", func() bool {
		return strings.Contains(logs.String(), "waiting as standby")
	})
	reports := func(n int) {
		t.Helper()
		from, count := time.Now(), 0
		var seen time.Time
		testenv.WaitUntil(t, 60*time.Second, "the standby's reports", func() bool {
			_, standbys, err := wq.WorkersOf(ctx, host)
			if s, ok := standbys[host]; err == nil && ok && s.LastSeen.After(from) && !s.LastSeen.Equal(seen) {
				seen = s.LastSeen
				count++
			}
			return count >= n
		})
	}
	reports(2)
	testenv.WaitUntil(t, 10*time.Second, "the holder's pidfd opened", func() bool { return pidfds(t) == base+1 })
	goroutines := runtime.NumGoroutine()
	start := time.Now()
	reports(20)
	fds, now := pidfds(t), runtime.NumGoroutine()
	t.Logf("over %s of the standby's wait (heartbeat %s): pidfds %d -> %d (base %d), goroutines %d -> %d",
		time.Since(start).Round(time.Millisecond), heartbeat, base+1, fds, base, goroutines, now)
	if fds != base+1 {
		t.Errorf("the standby holds %d pidfds after 20 of its reports, want %d (the holder's, once)", fds-base, 1)
	}
	if now > goroutines+8 {
		t.Errorf("goroutines %d -> %d over 20 of the standby's reports", goroutines, now)
	}
	if o, err := e.store.GetOrder(ctx, id); err != nil || o.Status != order.StatusQueued {
		t.Fatalf("the standby took the host of a live holder: order %v (%v)", o.Status, err)
	}

	if err := holder.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited
	e.waitStatus(id, order.StatusSucceeded)
	// os/exec's pidfd goes with the holder's Wait; the watch's with the take.
	testenv.WaitUntil(t, 10*time.Second, "no pidfd left", func() bool { return pidfds(t) == base-1 })
}

// pidfds counts this process's open pidfds.
func pidfds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ent := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + ent.Name()); err == nil && l == "anon_inode:[pidfd]" {
			n++
		}
	}
	return n
}

// holdByProcess makes a `sleep` process the holder of host: recorded as
// its owner in PostgreSQL (host/old) and holding its lease key, as a
// worker would. exited is closed once the process has been reaped; it is
// killed at the test's end.
func holdByProcess(t *testing.T, ctx context.Context, e *env, url string, opts queue.Options, host string) (holder *exec.Cmd, exited chan struct{}) {
	t.Helper()
	holder = exec.Command("sleep", "600")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	exited = make(chan struct{})
	go func() { _ = holder.Wait(); close(exited) }()
	t.Cleanup(func() { _ = holder.Process.Kill(); <-exited })
	prev := processOwner(t, holder.Process.Pid)
	prev.Instance = host + "/old"
	if _, _, err := e.store.TakeHost(ctx, host, "test", prev); err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.Queue(t, url, host+"-old", opts).AcquireLease(ctx, host, prev.Instance, nil); err != nil {
		t.Fatal(err)
	}
	return holder, exited
}
