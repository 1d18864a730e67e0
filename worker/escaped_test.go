package worker_test

import (
	"bytes"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/worker/executor"
)

// TestEscapedProcessIsRecorded: without an order cgroup (worker.cgroup:
// off), a process that left the order's session (setsid) and held its
// stdout outlives the order. The order's record says so, and does not
// claim its end verified.
func TestEscapedProcessIsRecorded(t *testing.T) {
	e := newEnv(t)
	cfg := config.Default().Worker
	cfg.Cgroup = executor.CgroupOff
	e.startCgroup("escape-1", cfg)
	id := e.submit("escape-1", "sh", "-c", "setsid sh -c 'echo $$; exec sleep 100' & sleep 0.5")
	o := e.waitStatus(id, order.StatusSucceeded)
	line, _, _ := bytes.Cut(o.Result.Stdout.Content, []byte("\n"))
	if pid, err := strconv.Atoi(string(line)); err == nil {
		t.Cleanup(func() { _ = unix.Kill(pid, unix.SIGKILL) })
	} else {
		t.Fatalf("stdout %q does not start with the escapee's pid", o.Result.Stdout.Content)
	}
	if o.Processes["escaped"] != true || o.Processes["verified"] != "" {
		t.Errorf("processes = %v, want escaped and not verified", o.Processes)
	}
}
