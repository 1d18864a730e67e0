package worker_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
	"github.com/orderly-run/orderly/worker/executor"
)

// TestWorkerStartedOnAnAbsentLeaseLeavesTheHostToItsHolder: a second
// worker of a host starts while its holder runs an order and the lease
// key is absent from the server's store (a NATS server's clock stepped
// forward past the lease, the hosts bucket made again: a purge of the
// key's subject every 10 ms stands in for them, as in the queue's
// TestStandbyStartingOnAnAbsentKeyLeavesItToItsHolder). It took the key
// at once, fenced the host in PostgreSQL and ended the holder's running
// order interrupted, its process killed, the holder alive and renewing;
// the orders did not overlap (the takeover kills and proves gone the
// holder's processes before it runs anything), but an accepted order
// that would have succeeded was lost. PostgreSQL names the holder as the
// host's owner, so the new worker leaves the absent key to it for a lease,
// sees it renewed, and waits as a standby: the order succeeds, the next
// one runs after it, and the holder keeps the host.
func TestWorkerStartedOnAnAbsentLeaseLeavesTheHostToItsHolder(t *testing.T) {
	e := newEnv(t)
	ctx := testenv.Context(t)
	k := queue.NewMarkKey([]byte("seed of ab"))
	opts := worker.Options{Host: "ab", Instance: "ab/a", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second, ClaimMarkKey: k}
	runWorker(t, opts, e.store, e.q, testenv.Logger(t))
	first := e.submit("ab", "sleep", "5")
	e.waitStarted(first)

	st, err := e.q.JetStream().Stream(ctx, "KV_"+queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	pctx, stopPurging := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		stopPurging()
		wg.Wait()
	}()
	purge := func() error {
		return st.Purge(pctx, jetstream.WithPurgeSubject("$KV."+queue.HostsBucket+".lease.ab"))
	}
	if err := purge(); err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for pctx.Err() == nil {
			_ = purge()
			select {
			case <-pctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()

	// The second worker, on a connection and a Queue of its own: what a
	// second process has, nothing learned of the host but from PostgreSQL.
	q2 := testenv.Queue(t, e.q.Conn().ConnectedUrl(), "ab-b", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})
	var logs testenv.LogBuffer
	opts.Instance = "ab/b"
	runWorker(t, opts, e.store, q2, testenv.LoggerTo(io.MultiWriter(&logs, t.Output())))
	testenv.WaitUntil(t, 20*time.Second, "the second worker waits as a standby, or takes the host", func() bool {
		return strings.Contains(logs.String(), "waiting as standby") || strings.Contains(logs.String(), "took the host over")
	})
	// The holder's renewals keep coming while the key is purged: a lease
	// more of it.
	time.Sleep(2 * time.Second)
	stopPurging()

	o := e.waitStatus(first, order.StatusSucceeded)
	next := e.waitStatus(e.submit("ab", "true"), order.StatusSucceeded)
	if next.StartedAt.Before(*o.FinishedAt) {
		t.Fatalf("the next order started at %s, before the first finished at %s", next.StartedAt, o.FinishedAt)
	}
	if strings.Contains(logs.String(), "took the host over") {
		t.Fatalf("the second worker took the host from its live holder:\n%s", logs.String())
	}
	rows, err := e.store.Hosts(ctx, "ab")
	if err != nil || len(rows) != 1 || rows[0].Instance != "ab/a" {
		t.Fatalf("the host's owner: %+v, %v; want ab/a", rows, err)
	}
}

// TestWorkerRestartedAfterItsOwnerExitedTakesTheHostAtOnce: PostgreSQL
// names another instance as the host's owner, but that owner was a
// process of this machine's boot that has exited (a worker or serve
// restarted after a crash, or after a clean stop whose release the
// bucket no longer holds), and the lease key is absent. Nothing can renew
// it: the worker takes the host at once instead of leaving the key to a
// holder for a lease, with a WARN that blamed a clock step (every restart
// of `orderly serve` more than a lease after its stop waited 15 s before
// its first order). An owner that still runs is left its lease, as
// TestWorkerStartedOnAnAbsentLeaseLeavesTheHostToItsHolder proves.
func TestWorkerRestartedAfterItsOwnerExitedTakesTheHostAtOnce(t *testing.T) {
	e := newEnv(t)
	ctx := testenv.Context(t)
	gone, live, elsewhere := pastOwners(t)
	nons := gone
	nons.PidNS = 0
	for _, tc := range []struct {
		host string
		prev postgres.Owner
		wait bool
	}{
		{"gone", gone, false},
		{"live", live, true},
		{"elsewhere", elsewhere, true},
		// Recorded by a worker from before owners named their pid
		// namespace: nothing says what its pid is a number in.
		{"nons", nons, true},
	} {
		tc.prev.Instance = tc.host + "/old"
		t.Run(tc.host, func(t *testing.T) {
			if _, _, err := e.store.TakeHost(ctx, tc.host, "test", tc.prev); err != nil {
				t.Fatal(err)
			}
			q := testenv.Queue(t, e.q.Conn().ConnectedUrl(), tc.host+"-new", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})
			var logs testenv.LogBuffer
			runWorker(t, worker.Options{Host: tc.host, Instance: tc.host + "/new", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
				ShutdownGrace: 5 * time.Second}, e.store, q, testenv.LoggerTo(io.MultiWriter(&logs, t.Output())))
			testenv.WaitUntil(t, 20*time.Second, "the worker takes the host", func() bool {
				return strings.Contains(logs.String(), "took the host over")
			})
			// The wait's WARN is the Queue's; the worker's own line says
			// it stood by.
			if waited := strings.Contains(logs.String(), "waiting as standby"); waited != tc.wait {
				t.Fatalf("left the absent key to the owner %+v for a lease: %v, want %v:\n%s", tc.prev, waited, tc.wait, logs.String())
			}
			e.waitStatus(e.submit(tc.host, "true"), order.StatusSucceeded)
		})
	}
}

// pastOwners are records of a host's previous owner, each with a
// process of its own: exited (this test's own pid with another start
// time: the pid of an exited process, since taken by another), live
// (this process) and elsewhere (of another boot: nothing here can tell).
func pastOwners(t *testing.T) (exited, live, elsewhere postgres.Owner) {
	t.Helper()
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Fatal(err)
	}
	self, err := executor.Self()
	if err != nil {
		t.Fatal(err)
	}
	exited = postgres.Owner{PID: self.PID, Start: self.StartTime + 1, Boot: strings.TrimSpace(string(boot)), PidNS: self.PidNS}
	live = postgres.Owner{PID: self.PID, Start: self.StartTime, Boot: self.BootID, PidNS: self.PidNS}
	elsewhere = exited
	elsewhere.Boot = "another-boot"
	return exited, live, elsewhere
}

// TestWorkerStartedBesideALiveOwnerInAnotherPidNamespaceLeavesItTheHost:
// the host's owner in PostgreSQL is a live process of this boot in
// another pid namespace (another container on the same machine, which
// shares its boot id: here pid 1 of a namespace of its own, as a worker
// run as a container's entrypoint is), and the lease key is absent. Its
// pid here is another process's (this namespace's pid 1, started at
// another time), and the owner was judged gone (executor.Gone compared
// pid, start time and boot id only): the worker took the key at once, and
// its takeover would have interrupted the order the live owner ran. The
// owner's pid namespace is recorded with it now, and one that is not this
// worker's is left its lease, as any owner not known dead is.
func TestWorkerStartedBesideALiveOwnerInAnotherPidNamespaceLeavesItTheHost(t *testing.T) {
	testenv.NeedRootTools(t, "a process in a pid namespace of its own", "run the test as root")
	e := newEnv(t)
	ctx := testenv.Context(t)
	self, err := executor.Self()
	if err != nil || self.PidNS == 0 {
		t.Fatalf("this process: %+v, %v", self, err)
	}
	cmd := exec.Command("sleep", "600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command's ")": state is the first, starttime the 20th.
	start, err := strconv.ParseUint(string(bytes.Fields(stat[bytes.LastIndexByte(stat, ')')+1:])[19]), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	var ns syscall.Stat_t
	if err := syscall.Stat("/proc/"+strconv.Itoa(cmd.Process.Pid)+"/ns/pid", &ns); err != nil {
		t.Fatal(err)
	}
	if ns.Ino == self.PidNS {
		t.Fatalf("the owner's pid namespace is this test's (%d)", ns.Ino)
	}
	// As the owner's own Self recorded it: pid 1 of its namespace.
	owner := postgres.Owner{Instance: "pidns/old", PID: 1, Start: start, Boot: self.BootID, PidNS: ns.Ino}
	if _, _, err := e.store.TakeHost(ctx, "pidns", "test", owner); err != nil {
		t.Fatal(err)
	}
	if got, err := e.store.HostOwner(ctx, "pidns"); err != nil || got != owner {
		t.Fatalf("the owner read back: %+v, %v; want %+v", got, err, owner)
	}
	q := testenv.Queue(t, e.q.Conn().ConnectedUrl(), "pidns-new", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})
	var logs testenv.LogBuffer
	runWorker(t, worker.Options{Host: "pidns", Instance: "pidns/new", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, e.store, q, testenv.LoggerTo(io.MultiWriter(&logs, t.Output())))
	testenv.WaitUntil(t, 20*time.Second, "the worker waits as a standby, or takes the host", func() bool {
		return strings.Contains(logs.String(), "waiting as standby") || strings.Contains(logs.String(), "took the host over")
	})
	if strings.Contains(logs.String(), "took the host over") {
		t.Fatalf("the worker took the host at once from a live owner in another pid namespace:\n%s", logs.String())
	}
	// Nobody renews the key (the owner is a stand-in): the lease passes
	// and the worker takes the host, as it would from an owner that died.
	testenv.WaitUntil(t, 20*time.Second, "the worker takes the host after the lease", func() bool {
		return strings.Contains(logs.String(), "took the host over")
	})
	e.waitStatus(e.submit("pidns", "true"), order.StatusSucceeded)
}
