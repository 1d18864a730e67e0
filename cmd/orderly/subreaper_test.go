package main

import (
	"log/slog"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/orderly-run/orderly/internal/procfs"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestAdoptingWorkerLeavesNoSubreaperBehind: a worker that adopts its
// orders' orphans (startAdoptingWorker: `orderly worker`, serve on a
// PostgreSQL it does not manage) made its process a child subreaper for
// good. Run in this test binary (TestSchemaRolledBackStopsServers' worker,
// hC16's serve), it left the binary one: a later test's killed postmaster,
// which pg_ctl daemonized, was handed to the binary, never reaped, and its
// zombie held the pid (every start of that cluster refused, the CI's
// TestServeWithItsPostgreSQLThatWillNotStart). The flag is now cleared
// when the worker stops, or fails to start, and an orphan of the worker's
// reaped; a later orphan goes elsewhere.
func TestAdoptingWorkerLeavesNoSubreaperBehind(t *testing.T) {
	requireNoSubreaper(t, "before the test")
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) }) // for the tests after a failure
	s := newStack(t)
	cfg := s.watcher.Current()
	cfg.Host = "adopt-stop"
	wr, err := startAdoptingWorker(t.Context(), cfg, s.b, testenv.Logger(t), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !testenv.Subreaper(t) {
		_ = wr.stop()
		t.Fatal("the adopting worker did not make the process a child subreaper")
	}
	// Handed to the worker, and dead by its stop: a zombie until reaped.
	dead := testenv.Orphan(t, "0.1")
	if f := procfs.Fields(dead); f == nil || f[1] != strconv.Itoa(os.Getpid()) {
		_ = wr.stop()
		t.Fatalf("the orphan %d was not handed to the adopting worker's process: %q", dead, f)
	}
	waitUntil(t, 10*time.Second, "the orphan a zombie", func() bool {
		f := procfs.Fields(dead)
		return f != nil && f[0] == "Z"
	})
	if err := wr.stop(); err != nil {
		t.Fatal(err)
	}
	if testenv.Subreaper(t) {
		t.Error("the process is still a child subreaper after its worker stopped")
	}
	if f := procfs.Fields(dead); f != nil {
		t.Errorf("the worker's dead orphan %d was not reaped at its stop: %q", dead, f)
	}
	later := testenv.Orphan(t, "30")
	defer syscall.Kill(later, syscall.SIGKILL)
	if f := procfs.Fields(later); f != nil && f[1] == strconv.Itoa(os.Getpid()) {
		t.Errorf("an orphan after the worker stopped was handed to the test process %d", os.Getpid())
	}

	// A worker that does not start leaves no subreaper either.
	cfg.Host = "not a host"
	if _, err := startAdoptingWorker(t.Context(), cfg, s.b, slog.New(slog.DiscardHandler), nil, 0); err == nil {
		t.Fatal("a worker with an invalid host started")
	}
	if testenv.Subreaper(t) {
		t.Error("the process is a child subreaper after its worker failed to start")
	}
}

// requireNoSubreaper fails the test at once when the test binary is a
// child subreaper: an in-process worker that adopted orphans and did not
// stop being one (startAdoptingWorker). A postmaster pg_ctl daemonizes,
// killed by a test, would be handed to the binary and stay a zombie that
// holds its pid, and every start of its cluster would be refused.
func requireNoSubreaper(t *testing.T, when string) {
	t.Helper()
	if testenv.Subreaper(t) {
		t.Fatalf("the test binary is a child subreaper %s: an earlier test's in-process worker or serve left it one "+
			"(startAdoptingWorker clears it at the worker's stop)", when)
	}
}

// leavesNoSubreaper checks, once the test and its cleanups registered
// after this one have ended (an in-process `orderly worker`, or serve on a
// PostgreSQL it does not manage, stopped), that the test binary is no
// child subreaper: their worker adopted orphans and must stop at its
// stop. One found set fails the test that left it, and is cleared for
// the tests after it.
func leavesNoSubreaper(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		if testenv.Subreaper(t) {
			_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
			t.Error("the test process is still a child subreaper after its in-process worker stopped")
		}
	})
}
