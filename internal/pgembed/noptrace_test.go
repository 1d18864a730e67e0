package pgembed

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRunningToARootWithoutCapSysPtrace: serve run as root (the cluster
// as postgres) in a unit or container whose capabilities leave out
// CAP_SYS_PTRACE (deploy.md's root drop-in lists five; Docker's default
// set has none of it) may not read the postmaster's /proc/<pid>/cwd.
// postmasterAlive took that for a pid reused by another user's process:
// the live cluster read as dead, the supervisor tried to start it again
// every tick (postgres refusing, the log an error a tick), and Stop left
// it running when serve ended, for the next start to fail on its
// postmaster.pid. Here the test's thread drops CAP_SYS_PTRACE and asks.
func TestRunningToARootWithoutCapSysPtrace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root hands the cluster to another user")
	}
	s := startServer(t, Options{Dir: tempDir(t, "pgembed-"), Logger: testLogger(t)})
	pid := postmasterPID(t, s)
	type answer struct {
		running bool
		stop    error
		err     error
	}
	got := make(chan answer, 1)
	go func() {
		// Never unlocked: the thread, its capabilities dropped, ends with
		// this goroutine instead of going back to the scheduler.
		runtime.LockOSThread()
		if err := dropCapability(unix.CAP_SYS_PTRACE); err != nil {
			got <- answer{err: err}
			return
		}
		// What the scenario is: the postmaster's directory is out of reach.
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid) + "/cwd"); err == nil {
			got <- answer{err: errors.New("the postmaster's cwd is readable without CAP_SYS_PTRACE: nothing to test")}
			return
		}
		a := answer{running: s.running()}
		a.stop = s.Stop(t.Context())
		got <- a
	}()
	a := <-got
	if a.err != nil {
		t.Fatal(a.err)
	}
	if !a.running {
		t.Errorf("running() of a live cluster to root without CAP_SYS_PTRACE: false, want true")
	}
	if a.stop != nil {
		t.Errorf("Stop: %v", a.stop)
	}
	// The postmaster removes its file as it ends: Stop waits for that.
	if _, err := os.Stat(filepath.Join(s.dataDir, "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("postmaster.pid after Stop to root without CAP_SYS_PTRACE: %v, want it gone with the postmaster %d", err, pid)
	}
}

// dropCapability takes c out of the calling thread's effective and
// permitted sets.
func dropCapability(c int) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[c/32].Effective &^= 1 << (c % 32)
	data[c/32].Permitted &^= 1 << (c % 32)
	return unix.Capset(&hdr, &data[0])
}
