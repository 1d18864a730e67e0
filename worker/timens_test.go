package worker_test

import (
	"bytes"
	"io"
	"os"
	"strconv"
	"strings"
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

// TestWorkerLeavesTheLeaseOfALiveHolderInAnotherTimeNamespace: the
// host's lease key holds the value of a holder that is the host's owner
// in PostgreSQL, a live process of this boot and pid namespace in a time
// namespace of its own (unshare --time --boottime; a container restored
// by CRIU has one). /proc shows a process's start time offset by its
// reader's time namespace, so the start the owner recorded is not the
// one read here: the worker judged it exited and took the key at once
// (TestWorkerTakesTheLeaseOfAnExitedHolderAtOnce's take), two workers on
// one host. It waits as a standby now, until the holder releases the
// key. The bucket's lease is a minute, so that the key outlives the test
// unless someone takes it.
func TestWorkerLeavesTheLeaseOfALiveHolderInAnotherTimeNamespace(t *testing.T) {
	testenv.NeedRootTools(t, "a process in a time namespace of its own", "run the test as root", "unshare")
	e := newEnv(t)
	ctx := testenv.Context(t)
	ns := testenv.NATSServer(t, &server.Options{})
	self, err := executor.Self()
	if err != nil || self.PidNS == 0 {
		t.Fatalf("this process: %+v, %v", self, err)
	}
	// The holder: a process that reads its own start in its namespace,
	// as its Self would.
	owner := postgres.Owner{Instance: "timens/old", Boot: self.BootID, PidNS: self.PidNS}
	owner.PID, owner.Start = testenv.InTimeNamespace(t, "100000")
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(owner.PID) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command's ")": state is the first, starttime the 20th.
	if here := string(bytes.Fields(stat[bytes.LastIndexByte(stat, ')')+1:])[19]); here == strconv.FormatUint(owner.Start, 10) {
		t.Fatalf("the holder's start reads %s here as in its time namespace: the offset is not there", here)
	}
	opts := queue.Options{AckWait: time.Second, LeaseTTL: time.Minute}
	e.q = testenv.Queue(t, ns.ClientURL(), "api", opts) // the orders are published here
	if _, _, err := e.store.TakeHost(ctx, "timens", "test", owner); err != nil {
		t.Fatal(err)
	}
	held, err := testenv.Queue(t, ns.ClientURL(), "timens-old", opts).AcquireLease(ctx, "timens", owner.Instance, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := e.submit("timens", "true")
	var logs testenv.LogBuffer
	runWorker(t, worker.Options{Host: "timens", Instance: "timens/new", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, e.store, testenv.Queue(t, ns.ClientURL(), "timens-new", opts), testenv.LoggerTo(io.MultiWriter(&logs, t.Output())))
	testenv.WaitUntil(t, 20*time.Second, "the worker waits as a standby, or takes the host", func() bool {
		return strings.Contains(logs.String(), "waiting as standby") || strings.Contains(logs.String(), "took the host over")
	})
	if strings.Contains(logs.String(), "took the host over") {
		t.Fatalf("the worker took the host at once from a live holder in another time namespace (%+v):\n%s", owner, logs.String())
	}
	if err := held.Release(ctx); err != nil { // its holder stops
		t.Fatal(err)
	}
	e.waitStatus(id, order.StatusSucceeded)
}
