package executor

import (
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRunReportsProcess(t *testing.T) {
	t.Parallel()
	boot, err := os.ReadFile(bootIDPath)
	if err != nil {
		t.Fatal(err)
	}
	var seen []Process
	var live procStat
	req := baseRequest("/bin/true")
	req.OnStart = func(p Process, _ bool) error {
		seen = append(seen, p)
		// The leader is unreaped until Run is done with it, so /proc
		// still describes it even if it already exited.
		live, err = readStat(p.PID)
		return err
	}
	res := newTestExecutor(t).Run(t.Context(), req, nil)
	if exitCode(t, res) != 0 || res.Aborted != nil {
		t.Fatalf("exit %v Aborted %v", res.ExitCode, res.Aborted)
	}
	if len(seen) != 1 {
		t.Fatalf("OnStart called %d times", len(seen))
	}
	p := seen[0]
	here, err := readMachine()
	if err != nil {
		t.Fatal(err)
	}
	want := Process{PID: res.Pid, PGID: res.Pid, StartTime: live.startTime, BootID: strings.TrimSpace(string(boot)),
		MachineID: here.machineID, PidNS: here.pidNS}
	if p != want || res.Process != want {
		t.Errorf("OnStart got %+v, Result has %+v, want %+v", p, res.Process, want)
	}
	if p.PidNS == 0 || p.StartTime == 0 || live.session != p.PID || live.pgrp != p.PID {
		t.Errorf("leader: %+v, want a session and group of its own and a start time", live)
	}
	if res.Verified != VerifiedGroup {
		t.Errorf("Verified = %q, want %q", res.Verified, VerifiedGroup)
	}
}

// TestRunOnStartErrorKillsGroup is the worker's fence: when it cannot
// record the process (it no longer owns the order), the order's processes
// are killed at once, without the kill grace, and nothing survives.
func TestRunOnStartErrorKillsGroup(t *testing.T) {
	t.Parallel()
	lost := errors.New("order owned by another worker")
	ready := make(chan struct{})
	// Ignores SIGTERM: only SIGKILL ends it, and the grace is long.
	req := startedScript(`trap "" TERM; sleep 100 & echo $!; sleep 100`, func() { close(ready) })
	req.KillGrace = time.Minute
	req.OnStart = func(Process, bool) error {
		// Refuse once the child exists, to prove it is killed too.
		select {
		case <-ready:
		case <-time.After(10 * time.Second):
			return errors.New("the script never printed its child's pid")
		}
		return lost
	}
	start := time.Now()
	res := newTestExecutor(t).Run(t.Context(), req, nil)
	if !errors.Is(res.Aborted, lost) {
		t.Fatalf("Aborted = %v, want %v", res.Aborted, lost)
	}
	if res.ExitCode != nil || res.Signal != "SIGKILL" || res.Canceled || res.TimedOut {
		t.Errorf("ExitCode=%v Signal=%q Canceled=%v TimedOut=%v, want a SIGKILL and nothing else", res.ExitCode, res.Signal, res.Canceled, res.TimedOut)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Run took %v: it did not kill at once", took)
	}
	assertGroupGone(t, res, firstLinePID(t, res.Stdout.Content))
	if res.Verified != VerifiedGroup {
		t.Errorf("Verified = %q", res.Verified)
	}
}

// TestRunTimeoutCountsOnStart: a slow OnStart (PostgreSQL busy) does not
// extend the order's timeout.
func TestRunTimeoutCountsOnStart(t *testing.T) {
	t.Parallel()
	req := sh("sleep 100")
	req.Timeout = time.Second
	req.KillGrace = 0 // SIGKILL right away: the duration is the timeout's
	const slow = 1500 * time.Millisecond
	req.OnStart = func(Process, bool) error {
		time.Sleep(slow) // a slow record, not waiting for an event
		return nil
	}
	res := newTestExecutor(t).Run(t.Context(), req, nil)
	if !res.TimedOut {
		t.Fatalf("TimedOut = false, result %+v", res)
	}
	// Fired as soon as OnStart returned, not a whole timeout later.
	if limit := slow + req.Timeout/2; res.Duration > limit {
		t.Errorf("Duration = %v, want under %v: the timeout restarted after OnStart", res.Duration, limit)
	}
	assertGroupGone(t, res)
}

// TestRunOnStartSaysTheLeaderExited: a leader that exits within ExitWait
// is handed to OnStart as exited, still unreaped (its /proc entry is its
// own), and the rest of its group is ended before Run returns; one that
// runs on past ExitWait is handed over as running. Without a cgroup, a
// leader that exits within ExitWait and leaves a process of its session
// alive (`sleep 100 &`) is handed over as running too: its record is all
// a successor would find that process by. What it forked and was done
// with by its exit (`/bin/true`) does not count. Past ExitWait, a
// leader that is runnable and alone in its session (a command of a few
// milliseconds of processor, here a shell's loop, waiting for a
// processor on a loaded host) is given up to AloneWait to exit, and is
// then handed over as exited; one that sleeps (`sleep 1`) is handed over
// as running at once, though it would exit well within AloneWait.
func TestRunOnStartSaysTheLeaderExited(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		script          string
		wait, aloneWait time.Duration
		exited          bool
	}{
		// ExitWait of a minute: it ends at the exit, long before.
		{`/bin/true; echo $$`, time.Minute, 0, true},
		{`sleep 100 </dev/null >/dev/null 2>&1 & echo $!`, time.Minute, 0, false},
		{`i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; echo $$`, time.Millisecond, time.Minute, true},
		{`echo $$; exec sleep 1`, time.Millisecond, time.Minute, false},
	} {
		var exited []bool
		var st procStat
		req := sh(tt.script)
		req.ExitWait, req.AloneWait = tt.wait, tt.aloneWait
		req.OnStart = func(p Process, gone bool) (err error) {
			exited = append(exited, gone)
			st, err = readStat(p.PID)
			return err
		}
		res := newTestExecutor(t).Run(t.Context(), req, nil)
		if len(exited) != 1 || exited[0] != tt.exited || exitCode(t, res) != 0 || res.Aborted != nil {
			t.Fatalf("%s: OnStart saw exited %v; exit %v, Aborted %v: want one call, exited %v, and a clean exit",
				tt.script, exited, res.ExitCode, res.Aborted, tt.exited)
		}
		if tt.exited && (st.state != 'Z' || st.pgrp != res.Pid) {
			t.Errorf("%s: the leader at OnStart: state %c, group %d; want an unreaped zombie leading group %d", tt.script, st.state, st.pgrp, res.Pid)
		}
		assertGroupGone(t, res, firstLinePID(t, res.Stdout.Content))
	}

	var exited []bool
	req := sh("sleep 100")
	req.ExitWait = 10 * time.Millisecond
	req.Timeout, req.KillGrace = 100*time.Millisecond, 0 // ends it
	req.OnStart = func(_ Process, gone bool) error {
		exited = append(exited, gone)
		return nil
	}
	res := newTestExecutor(t).Run(t.Context(), req, nil)
	if len(exited) != 1 || exited[0] || !res.TimedOut {
		t.Fatalf("OnStart saw exited %v, TimedOut %v: want one call, running, and the timeout's end", exited, res.TimedOut)
	}
	assertGroupGone(t, res)
}

// TestRunAloneWaitEndsByItsDeadline: the alone wait of a leader that
// stays runnable and alone in its session (a shell spinning) ends when
// AloneWait has passed on the executor's clock, however long each of its
// looks takes. The clock runs twenty times fast here, as every look of a
// loaded host takes longer than its step: the wait counted in steps of
// ExitWait ended after AloneWait of real time, twenty AloneWaits on that
// clock (docs/decisions.md, hH25, hD26). Its end is looked at on the
// same clock, from before Run: the process's start, the last look and
// OnStart's identification come on top, a second of real time allowed
// for them. Nor does the wait end early: the leader never leaves it.
func TestRunAloneWaitEndsByItsDeadline(t *testing.T) {
	t.Parallel()
	const fast, aloneWait = 20, 5 * time.Second
	e := newTestExecutor(t)
	start := time.Now()
	e.now = func() time.Time { return start.Add(fast * time.Since(start)) }
	var at time.Time
	var exited []bool
	enough := errors.New("recorded; the test ends the spinning leader")
	req := sh("while :; do :; done")
	req.ExitWait, req.AloneWait = 10*time.Millisecond, aloneWait
	req.OnStart = func(_ Process, gone bool) error {
		at = e.now()
		exited = append(exited, gone)
		return enough
	}
	res := e.Run(t.Context(), req, nil)
	if !errors.Is(res.Aborted, enough) || len(exited) != 1 || exited[0] {
		t.Fatalf("Aborted %v, OnStart saw exited %v: want one call, running, and OnStart's error", res.Aborted, exited)
	}
	if waited, limit := at.Sub(start), aloneWait+fast*time.Second; waited < aloneWait || waited > limit {
		t.Errorf("OnStart came %s after Run on the executor's clock, want AloneWait (%s) and at most %s", waited, aloneWait, limit)
	}
	assertGroupGone(t, res)
}

// TestRunOnStartHearsALeaderDeadBeforeItsWaitEnds: a leader that exited
// within ExitWait is handed to OnStart as exited even when its exit has
// not reached Run by the time the wait ends, as on a loaded host where
// the worker's threads do not run for longer than the wait (here the
// exit is held back until OnStart has been called). Handed over as
// running, its record was committed on its own: a flushed commit more
// for an order that was over (docs/decisions.md, "The backlog against
// its floor, profiled (hC24)").
func TestRunOnStartHearsALeaderDeadBeforeItsWaitEnds(t *testing.T) {
	t.Parallel()
	e := newTestExecutor(t)
	heard := make(chan struct{})
	var once sync.Once
	e.leaderExited = func(pid int) error {
		<-heard
		return waitExitedNoReap(pid)
	}
	t.Cleanup(func() { once.Do(func() { close(heard) }) })
	var exited []bool
	var st procStat
	req := baseRequest("/bin/true")
	// Long enough for /bin/true to be done on a loaded host; its exit
	// is never heard within it.
	req.ExitWait = 2 * time.Second
	req.OnStart = func(p Process, gone bool) (err error) {
		exited = append(exited, gone)
		st, err = readStat(p.PID)
		once.Do(func() { close(heard) })
		return err
	}
	res := e.Run(t.Context(), req, nil)
	if len(exited) != 1 || !exited[0] || exitCode(t, res) != 0 || res.Aborted != nil {
		t.Fatalf("OnStart saw exited %v; exit %v, Aborted %v: want one call, exited, and a clean exit", exited, res.ExitCode, res.Aborted)
	}
	if st.state != 'Z' || st.pgrp != res.Pid {
		t.Errorf("the leader at OnStart: state %c, group %d; want an unreaped zombie leading group %d", st.state, st.pgrp, res.Pid)
	}
	assertGroupGone(t, res)
}
