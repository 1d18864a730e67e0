// Package executor runs one process for an order, safely: in its own session
// and process group (and, where the worker may make cgroup v2 children,
// its own cgroup), with exactly the environment it is given and
// no descriptor of the worker's but its three streams, optionally under
// another user's credentials, with stdin from the request or /dev/null, a
// timeout, cancel signals and bounded output capture.
//
// An order never leaves processes behind. When the leader exits, for any
// reason, whatever is left of its process group is killed with SIGKILL before
// the leader is reaped, and the worker then confirms the group is empty
// (Result.GroupGone). This is the process-group analogue of systemd's
// KillMode=control-group. A descendant that moves to a group of its own
// (setpgid, a shell's job control) stays in the order's session, and the
// session's other groups are killed too (killSession). Its limit is the
// session: a descendant that starts a session of its own (setsid, a
// daemonizing double fork) escapes it, unless the worker is its orphans'
// subreaper (AdoptOrphans): then every descendant of the order that loses
// its parent is handed to the worker, and ended and reaped at the order's
// end (Result.Adopted, VerifiedSubreaper). An order cgroup
// (Request.CgroupParent) has no such limit: cgroup.kill ends every process
// in it, and the kill is then verified by the cgroup (Result.Verified).
// Escapees cannot hang the worker: pipes they hold open are closed after
// pipeDrainDelay.
//
// A worker that dies cannot end its order; the order's leader dies with it
// (Pdeathsig), its other processes do not. Request.OnStart hands the worker
// the order's Process identity to record, and Reap lets the worker that
// takes over end and verify what is left of it.
package executor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/orderly-run/orderly/internal/order"
)

// pipeDrainDelay bounds how long Wait keeps reading stdout and stderr after
// the whole process group is dead. Only a process that escaped the group can
// still hold the pipes then, and its output is not the order's.
const pipeDrainDelay = 2 * time.Second

// leaderGoneTimeout bounds how long Run waits for the leader to die after
// the SIGKILL that ends a timeout's or a cancel's grace. A leader in
// uninterruptible sleep (a hard NFS mount whose server is gone) can stay
// so for hours: with its SIGKILL pending it never runs another instruction
// of the order, and the host's later orders are not held up for it (see
// Run). A leader the worker may not signal is waited for without a bound.
const leaderGoneTimeout = 10 * time.Second

// errLeaderStuck is supervise's answer when the leader outlived
// leaderGoneTimeout after its SIGKILL.
var errLeaderStuck = errors.New("the leader did not die after SIGKILL")

// ErrCanceledBeforeStart is in the StartErr of a Result whose order a
// cancel signal ended before any process of it started (while it waited
// for a file descriptor): nothing ran, so the order is canceled, not
// failed nor killed.
var ErrCanceledBeforeStart = errors.New("canceled before it started")

// ErrNotStarted is in the StartErr of a Result whose ctx ended (the
// worker's stop, past its shutdown grace) before any process of the order
// started, as while it waited for a file descriptor: nothing of it ran,
// so the worker hands it back to the queue rather than end it.
var ErrNotStarted = errors.New("not started")

// groupGoneTimeout bounds how long Run waits for the SIGKILLed members of the
// group to die. A member stuck in uninterruptible sleep (a dead NFS server)
// can outlive it; Result.GroupGone is then false and a warning is logged.
const groupGoneTimeout = 2 * time.Second

// Request is one process to run. It is built by worker/hostpolicy, which has
// already resolved and checked everything in it; the executor only refuses
// what it cannot run at all.
type Request struct {
	// Path is the absolute path of the executable.
	Path string
	// Argv is the argument vector; Argv[0] is the command name as requested,
	// which multi-call binaries (busybox, systemctl as shutdown) act on.
	Argv []string
	// Env is the complete environment. The worker's own environment is never
	// inherited: a nil Env means an empty environment.
	Env []string
	// Dir is the working directory; empty means the worker's.
	Dir string
	// Stdin is fed to the process; nil or empty means /dev/null.
	Stdin []byte
	// Timeout ends the process group (SIGTERM, KillGrace, SIGKILL); zero or
	// negative means no timeout.
	Timeout time.Duration
	// KillGrace is how long a group has between SIGTERM (or a cancel
	// signal) and SIGKILL. Zero or negative sends SIGKILL right away.
	KillGrace time.Duration
	// Credential switches uid, gid and supplementary groups (the worker must
	// be root); nil runs as the worker's own user. A Credential with no
	// Groups clears the supplementary groups rather than inheriting the
	// worker's.
	Credential *syscall.Credential
	// MaxOutput is the per-stream cap on kept bytes: the first half and the
	// last half of a longer stream are kept (see capture). Zero or negative
	// keeps nothing, so a forgotten cap can never mean unbounded memory.
	MaxOutput int64
	// CaptureStdout and CaptureStderr choose which streams are captured. A
	// stream that is not captured goes to /dev/null and nothing is recorded
	// about it: its Output stays zero (no byte count, no hash) and OnOutput
	// never sees it.
	CaptureStdout bool
	CaptureStderr bool
	// OnOutput, if set, sees every chunk of a captured stream as it
	// arrives, with stream "stdout" or "stderr". It is called from the
	// executor's goroutines (today one per Run, for both streams) and
	// must be safe for concurrent use; it must not retain p, and while it
	// blocks the process blocks on a full pipe (both pipes, today).
	// It is never called after Run returns. When it is called, Captured
	// holds p (until the stream passes the cap: see Captured).
	OnOutput func(stream string, p []byte)
	// Captured, if set, is given the captured streams before the process
	// starts, for whoever wants to read them while it runs (the worker's
	// live output, after a NATS restart).
	Captured *Captured
	// Secrets never show in a captured stream: each occurrence is masked
	// with * (a delegated token past its orderly-rb-) in what OnOutput
	// sees and in what is kept, counted and hashed. A script's delegated
	// token is one: set -x or env printed it, and whoever reads the
	// order's output (an auditor) could run runbooks as its principal
	// while the run lasted; an action's secret params are the others.
	// Bytes that may begin one wait for the next read or the stream's
	// end. Empty ones are ignored.
	Secrets []string
	// CgroupParent, when set, is a cgroup v2 directory the worker owns
	// (see ResolveCgroupParent); the order then runs in its own
	// child cgroup CgroupName, created for it, started into it atomically
	// (clone3 CLONE_INTO_CGROUP) and removed after cgroup.kill at the end.
	// A cgroup that cannot be created is a StartErr: containment that was
	// asked for is never silently dropped.
	CgroupParent string
	// CgroupName names the order's cgroup, one path element unique to the
	// order ("order-<id>"), the same for each of its attempts. An existing
	// cgroup of that name is an earlier attempt's, left populated or not
	// removed: it is ended (cgroup.kill, seen empty, removed) before this
	// attempt's is made, and one that will not end is a StartErr.
	CgroupName string
	// OnStart, if set, is called with the identity of the started process
	// before Run waits for it; the process runs meanwhile. exited reports
	// that the leader had already exited by then (it is not reaped yet:
	// its pid is still its own, and the rest of the order is ended before
	// Run returns) and, without a cgroup, that no other process of its
	// session is alive: then nothing of the order can run on that only
	// the process's identity would let a successor find. When it returns
	// an error (the worker could not record the process, or no longer
	// owns the order) the order's processes are SIGKILLed at once and
	// Result.Aborted holds the error: a process the worker cannot account
	// for must not run on. It is called at most once, from Run's
	// goroutine; Timeout counts from the start, OnStart's time included.
	OnStart func(p Process, exited bool) error
	// Started, if set, is called once the leader has started (its execve
	// done), before Run waits for anything or reads any of the order's
	// output: what the caller does there runs while the command does, not
	// between the caller's last write and the start (the worker sends the
	// previous order's finished event and ack and this order's started
	// event there: docs/decisions.md, "The backlog's serial path
	// (hD27)"), and comes before the output's first chunk. It is not
	// called when nothing started, except that a start which waits for a
	// file descriptor calls it when its wait begins (the wait is the
	// start's; its followers were told `started` there before hD27).
	// Called at most once, from Run's goroutine, before OnStart; Timeout
	// and ExitWait count its time.
	Started func()
	// OrderID names the order in the executor's lines about the host
	// (out of descriptors or processes), as order_id.
	OrderID uuid.UUID
	// ExitWait is how long Run gives the leader to exit before it calls
	// OnStart: a leader that exits meanwhile (a command of a millisecond)
	// is handed over as exited, unless it left a process of its session
	// alive and the order has no cgroup. A cancel signal or a timeout is
	// acted on after the wait. Zero calls OnStart at once.
	ExitWait time.Duration
	// AloneWait is how long in all Run gives the leader of an order
	// without a cgroup to exit while it stays runnable and the only
	// live process of its session (exitedBeforeRecord): looked at again
	// every ExitWait, until AloneWait has passed on the clock, the
	// looks' own time included. No more than ExitWait when it is zero
	// or shorter.
	// A cancel signal or a timeout is acted on after this wait too.
	AloneWait time.Duration
}

// Result is what running a Request produced.
type Result struct {
	// ExitCode is the exit status of a process that exited; nil when it was
	// killed by a signal or never started.
	ExitCode *int
	// Signal names the signal that killed the process ("SIGKILL"); empty
	// when it exited. A process that handles a cancel signal and exits has
	// an ExitCode and no Signal, even when Canceled or TimedOut is set.
	Signal string
	// Pid is the leader's pid, which is also the process group id.
	Pid int
	// Duration runs from just before the start to the leader's exit.
	Duration time.Duration
	// TimedOut is set when Request.Timeout ended the process group.
	TimedOut bool
	// Canceled is set when a cancel signal was sent to the group, or when
	// ctx ended (worker shutdown), or when ctx had ended before the start.
	Canceled bool
	// StartErr says why the process could not start (ENOENT, EACCES, a
	// credential or directory it cannot switch to); everything else is then
	// zero except Canceled and GroupGone.
	StartErr error
	// Stdout and Stderr are the captured streams.
	Stdout, Stderr order.Output
	// StdoutSpill and StderrSpill hold the Content of a stream whose
	// capture moved it to a file (SpillTo) and that fit in the cap: its
	// Content is then nil, and the caller reads it from the file and
	// closes the file once done. nil for a stream held in memory.
	StdoutSpill, StderrSpill *Spill
	// GroupGone is set when the worker confirmed that no live process of the
	// group, nor of another group of the order's session, survives (zombies
	// waiting for init to reap them count as gone). It is also set when
	// nothing was started.
	GroupGone bool
	// Process identifies what was started; zero when nothing was.
	Process Process
	// Aborted is the error of Request.OnStart, or why the process could
	// not be identified for it; the order's processes were then killed
	// right after the start.
	Aborted error
	// Verified says how the end of all the order's processes was proven:
	// VerifiedCgroup (escapees included) or VerifiedGroup; empty when it
	// could not be (GroupGone false, the cgroup would not empty, or
	// Escaped) or when nothing was started.
	Verified string
	// Escaped is set when a process outside the order's group and session
	// (and cgroup) held its stdin, stdout or stderr after they were ended: a
	// process of the order outlived it, and its output was cut after
	// pipeDrainDelay. For an adopting Executor (AdoptOrphans) without a
	// cgroup it is also set when an orphan of the order survived its
	// SIGKILL.
	Escaped bool
	// OOMKill says why the kernel's OOM killer most likely ended the
	// order, when its leader died of a SIGKILL the worker did not send
	// and the kernel counted OOM kills meanwhile (oomKilled); empty
	// otherwise.
	OOMKill string
	// Adopted counts the processes of the order that had left its session
	// (setsid, a daemonizing double fork) and were found, ended and
	// reaped as the worker's orphans at its end; only an adopting
	// Executor finds them (AdoptOrphans).
	Adopted int
}

// Executor runs processes. It holds no per-run state, so one Executor may
// run several Requests at once.
type Executor struct {
	logger *slog.Logger
	// bufs holds *[]byte read buffers for the pipes' loop, reused across
	// runs to keep the hot path's garbage down.
	bufs sync.Pool
	// machine is read once: the boot, the machine and our pid namespace
	// do not change while we run.
	machine func() (machine, error)
	// host holds the host-wide /proc files the session checks read,
	// open (hostfiles.go).
	host *hostFiles
	// pids is the reading of the pid allocator with the highest fork
	// count so far (nil: none yet). Read before a start, it is a reading
	// taken before that start, which is all killSession needs of it.
	pids atomic.Pointer[pidReading]
	// leaderExited waits for the leader to exit without reaping it;
	// nil is waitExitedNoReap. Tests stand in for a leader that will
	// not die.
	leaderExited func(pid int) error
	// adopting is set by AdoptOrphans (and cleared by StopAdopting): the
	// process is a child subreaper and Run ends the orders' orphans
	// (endAdopted).
	adopting atomic.Bool
	// mu guards leaders, and is held from a leader's start to its entry
	// there when adopting (lockStarts).
	mu sync.Mutex
	// leaders holds the pids of this Executor's leaders that are started
	// and not reaped yet, when adopting.
	leaders map[int]struct{}
	// setSubreaper says AdoptOrphans set the process's child subreaper
	// flag (it was clear), so StopAdopting clears it; guarded by mu.
	setSubreaper bool
	// descriptorWait is how long an order waits for a file descriptor
	// when the worker or the system has none left to start it
	// (startWaitForDescriptors; tests shorten it).
	descriptorWait time.Duration
	// oomSeen is the last look at the kernel's OOM kill counts (oom.go):
	// taken before the first order, and after each leader killed by a
	// SIGKILL the worker did not send.
	oomSeen atomic.Pointer[oomReading]
	// spillDir is where a capture past spillFrom bytes moves them to an
	// unnamed file (SpillTo); empty: captures stay in memory.
	spillDir string
	// now is the clock the alone wait's deadline is read on
	// (exitedBeforeRecord); tests run it fast, as a loaded host makes
	// each of the wait's looks take longer than its step.
	now func() time.Time
	// ordersSlack is the timer slack the orders' commands start with,
	// ownSlack the process's, put back after each start
	// (OrdersTimerSlack; timerslack.go). 0: they inherit the process's.
	ordersSlack, ownSlack time.Duration
}

// SpillTo has the captures of the orders Run from now on keep a stream
// past spillFrom bytes in an unnamed file in dir (Spill) instead of the
// heap, and hand it over in Result.StdoutSpill and StderrSpill when it
// fit in the cap. Call it before the first Run. Where dir takes no
// unnamed file, the stream stays in memory.
func (e *Executor) SpillTo(dir string) { e.spillDir = dir }

// startWaitForDescriptors bounds how long an order that cannot start
// because the worker (RLIMIT_NOFILE) or the system (fs.file-max) is out
// of file descriptors waits for one, trying again with a backoff, before
// it fails. Descriptors come back as they are closed (a live follower of
// serve's API that leaves, a connection of the pool that ends), and an
// order failed for a passing shortage would be one to submit again; a
// worker that leaks them never gets them back, and the host's orders then
// fail one by one, each after this wait, rather than the host stalling
// silently. The host's next orders wait behind it meanwhile.
const startWaitForDescriptors = 10 * time.Second

// devNull is /dev/null for reading and for writing, opened once for the
// whole process (close-on-exec, never closed) and handed to every order
// whose stdin or output is not wanted. os/exec opens /dev/null afresh for
// each such stream of each start and closes it after: an open, four fcntl,
// a refused epoll_ctl and a close per order, and a File to collect. nil
// where it could not be opened: os/exec then does it itself, as before.
var devNull = sync.OnceValues(func() (in, out *os.File) {
	in, err := os.Open(os.DevNull)
	if err != nil {
		in = nil
	}
	out, err = os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		out = nil
	}
	return in, out
})

// New returns an Executor that logs to logger (nil discards).
func New(logger *slog.Logger) *Executor {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	e := &Executor{logger: logger, machine: sync.OnceValues(readMachine), leaders: map[int]struct{}{},
		descriptorWait: startWaitForDescriptors, now: time.Now, host: newHostFiles()}
	e.host.closeWhenUnreachable(e)
	return e
}

// Run starts the process described by req and waits for it and its whole
// process group to end.
//
// A signal received from signals (a user's cancel) goes to the whole process
// group and to the rest of the order (the session's other groups, or every
// process of the order's cgroup), SIGKILL follows after KillGrace, and the
// Result is Canceled; a zero signal means SIGTERM, and a closed channel is
// ignored. A timeout's SIGTERM goes to the same processes. When ctx ends
// (worker shutdown) the group is ended like on a timeout (SIGTERM,
// KillGrace, SIGKILL) and the Result is Canceled. Run returns once the
// group is confirmed gone, or after groupGoneTimeout with GroupGone false
// when a member will not die (uninterruptible sleep, a setuid process an
// unprivileged worker may not signal). A leader that does not die
// leaderGoneTimeout after the grace's SIGKILL ends the order too, with
// GroupGone false, neither ExitCode nor Signal, and output that may be
// cut; it is reaped in the background once it dies.
//
// A start that fails for want of processes or file descriptors says in
// StartErr which limit was reached (explainStart). One out of file
// descriptors is tried again, with a backoff, for up to
// startWaitForDescriptors: a cancel signal or the end of ctx meanwhile
// ends the wait, and the Result is then Canceled with the StartErr (which
// holds ErrCanceledBeforeStart for a cancel signal, ErrNotStarted for
// the end of ctx).
func (e *Executor) Run(ctx context.Context, req Request, signals <-chan syscall.Signal) Result {
	var (
		first, deadline time.Time // of the wait for a descriptor
		delay           = 50 * time.Millisecond
	)
	for {
		res := e.runOnce(ctx, req, signals)
		if res.StartErr == nil {
			if !deadline.IsZero() {
				e.logger.LogAttrs(ctx, slog.LevelInfo, "file descriptors free again: the order that waited for one started",
					slog.String("order_id", req.OrderID.String()), slog.Duration("waited", time.Since(first)))
			}
			return res
		}
		err := explainStart(res.StartErr, req.Credential, req.CgroupParent)
		res.StartErr = err
		if errors.Is(err, syscall.EAGAIN) {
			// Not tried again: a fork bomb's processes, or the
			// user's, need not end; the order fails, and this says
			// the host is short of processes, once per order.
			e.logger.LogAttrs(ctx, slog.LevelWarn, "out of processes: the order could not start",
				slog.String("order_id", req.OrderID.String()), slog.String("error", err.Error()))
		}
		if !outOfDescriptors(err) || ctx.Err() != nil {
			return res
		}
		now := time.Now()
		if deadline.IsZero() {
			first, deadline = now, now.Add(e.descriptorWait)
			// Once per order: the tries that follow say nothing new.
			e.logger.LogAttrs(ctx, slog.LevelWarn, "out of file descriptors: the order waits for one to start, then fails",
				slog.String("order_id", req.OrderID.String()), slog.String("error", err.Error()), slog.Duration("wait", e.descriptorWait))
			// The wait is part of the start: the caller's Started work
			// (the started event its followers read, the previous
			// order's settling) is not held for up to the whole wait.
			if req.Started != nil {
				req.Started()
				req.Started = nil
			}
		}
		left := deadline.Sub(now)
		if left <= 0 {
			res.StartErr = fmt.Errorf("%w; gave up after %s", err, e.descriptorWait)
			return res
		}
		t := time.NewTimer(min(delay, left))
		delay = min(2*delay, time.Second)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return Result{Canceled: true, GroupGone: true, StartErr: fmt.Errorf("%w: %w", ErrNotStarted, ctx.Err())}
		case _, ok := <-signals:
			t.Stop()
			if !ok {
				signals = nil
				continue
			}
			return Result{Canceled: true, GroupGone: true,
				StartErr: fmt.Errorf("%w, while it waited for a file descriptor: %w", ErrCanceledBeforeStart, err)}
		}
	}
}

// runOnce is one try of Run's: it starts the process and supervises it,
// or returns the start's error as it came.
func (e *Executor) runOnce(ctx context.Context, req Request, signals <-chan syscall.Signal) Result {
	if err := ctx.Err(); err != nil {
		return Result{Canceled: true, GroupGone: true, StartErr: fmt.Errorf("%w: %w", ErrNotStarted, err)}
	}
	if !filepath.IsAbs(req.Path) {
		return Result{GroupGone: true, StartErr: fmt.Errorf("executable path %q is not absolute", req.Path)}
	}
	if req.OnStart != nil {
		// The identity OnStart needs names this machine's boot and pid
		// namespace (read once). Unreadable (a /proc of another pid
		// namespace: readPidNS), it failed after the start, and the
		// order's process was killed having run meanwhile
		// (TestAnOrderDoesNotStartWhereProcIsAnotherPidNamespaces).
		if _, err := e.machine(); err != nil {
			return Result{GroupGone: true, StartErr: fmt.Errorf("identify this machine: %w", err)}
		}
	}
	argv := req.Argv
	if len(argv) == 0 {
		argv = []string{req.Path}
	}
	env := req.Env
	if env == nil {
		env = []string{} // a nil Env would make os/exec inherit ours
	}
	cmd := &exec.Cmd{
		Path: req.Path,
		Args: argv,
		Env:  env,
		Dir:  req.Dir,
		SysProcAttr: &syscall.SysProcAttr{
			// A new session, not only a new group: nothing outside the
			// order can join a group of the order's session, which lets
			// Reap tell the order's group from a later one with the same
			// id. It also leaves the order without a controlling terminal.
			Setsid:     true,
			Credential: req.Credential,
			// If the worker dies, its order's leader dies too rather than
			// running on unsupervised; the group's other members are
			// left to systemd's cgroup.
			Pdeathsig: syscall.SIGKILL,
		},
	}
	var cg *orderCgroup
	if req.CgroupParent != "" {
		var fd int
		var earlier []int
		var err error
		cg, fd, earlier, err = createOrderCgroup(req.CgroupParent, req.CgroupName)
		if earlier != nil {
			e.logger.LogAttrs(ctx, slog.LevelWarn, "ended the cgroup an earlier attempt of the order left",
				slog.String("cgroup", filepath.Join(req.CgroupParent, req.CgroupName)), slog.Any("killed", earlier))
		}
		if err != nil {
			return Result{GroupGone: true, StartErr: fmt.Errorf("create the order's cgroup: %w", err)}
		}
		defer unix.Close(fd)
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = fd
	}

	// Streams not asked for are /dev/null: the process's shared one
	// (devNull), or os/exec's own (nil) if it could not be opened.
	var stdout, stderr *capture
	pp := newPipes(req.Credential, &e.bufs)
	nullIn, nullOut := devNull()
	if nullIn != nil {
		cmd.Stdin = nullIn
	}
	if nullOut != nil {
		cmd.Stdout, cmd.Stderr = nullOut, nullOut
	}
	// Without a cgroup, what left the group but not the session is found
	// among the pids handed out since the start (killSession), bounded by
	// a reading of the pid allocator taken before it: the last one taken,
	// or else one now. nil: none could be, and every pid is looked at.
	// endAdopted looks at the same pids, with or without a cgroup.
	adopting := e.adopting.Load()
	before := e.pids.Load()
	if before == nil && (cg == nil || adopting) {
		before = e.readPids()
	}
	if e.oomSeen.Load() == nil {
		e.oomSeen.CompareAndSwap(nil, readOOM(oomSources(req.CgroupParent)))
	}
	start := time.Now()
	unlockStarts := e.lockStarts()
	err := func() (err error) {
		if err := inheritNothing(); err != nil {
			return fmt.Errorf("keep the worker's descriptors from the order: %w", err)
		}
		if len(req.Stdin) > 0 {
			if cmd.Stdin, err = pp.input(req.Stdin); err != nil {
				return err
			}
		}
		var secrets [][]byte
		for _, s := range req.Secrets {
			if s != "" {
				secrets = append(secrets, []byte(s))
			}
		}
		if req.CaptureStdout {
			stdout = newCapture("stdout", req.MaxOutput, req.OnOutput)
			stdout.spillDir = e.spillDir
			stdout.secrets = secrets
			if req.Captured != nil {
				req.Captured.stdout = stdout
			}
			if cmd.Stdout, err = pp.output(stdout); err != nil {
				return err
			}
		}
		if req.CaptureStderr {
			stderr = newCapture("stderr", req.MaxOutput, req.OnOutput)
			stderr.spillDir = e.spillDir
			stderr.secrets = secrets
			if req.Captured != nil {
				req.Captured.stderr = stderr
			}
			if cmd.Stderr, err = pp.output(stderr); err != nil {
				return err
			}
		}
		if err := e.start(cmd); err != nil {
			return err
		}
		e.leaderStarted(cmd.Process.Pid)
		return nil
	}()
	unlockStarts()
	if err != nil {
		pp.close()
		if cg != nil {
			if rmErr := cg.remove(); rmErr != nil {
				e.logger.LogAttrs(ctx, slog.LevelWarn, "remove the cgroup of an order that did not start",
					slog.String("cgroup", cg.path), slog.String("error", rmErr.Error()))
			}
		}
		return Result{GroupGone: true, StartErr: err}
	}
	pid := cmd.Process.Pid // Setsid made it the group and session id too
	res := Result{Pid: pid}

	// The leader is identified now, while it runs, not once its exit is
	// heard: its group, session and start time are set for good by its
	// start, and its pid stays its own until it is reaped, so the read
	// is the same either way; for a command of a millisecond it was on
	// the worker's serial path between the exit and the result's write
	// (docs/decisions.md, "The backlog's serial path (hD27)").
	id, idErr := e.identifyLeader(pid, cg)
	// Started comes before the pipes are read: nothing of the order's
	// output is published before what the caller publishes there.
	if req.Started != nil {
		req.Started()
	}

	// The leader is waited for with WNOWAIT: it stays a zombie, which keeps
	// its pid, and so the group id, from being reused until the group has
	// been killed below. The pipes' loop waits for it on a pidfd (the
	// leader is our unreaped child: the pid is still its own); without
	// pipes, or a pidfd, a goroutine blocks in waitid.
	exited := make(chan error, 1)
	waitExited := e.leaderExited
	pidfd := -1
	if waitExited == nil {
		waitExited = waitExitedNoReap
		if fd, err := unix.PidfdOpen(pid, 0); err == nil {
			pidfd = fd
		}
	}
	if !pp.watch(pid, pidfd, exited) {
		if pidfd >= 0 {
			_ = unix.Close(pidfd)
		}
		go func() { exited <- waitExited(pid) }()
	}

	var waitErr error
	exitedFirst := req.OnStart != nil && e.exitedBeforeRecord(exited, req, pid, cg, before)
	// Without a cgroup, a record is all a successor finds the order's
	// session by: a leader that left a process of its session alive is
	// handed over as running, for its record to be committed before
	// anything else. An ended session stays so: killSession has nothing
	// to do.
	sessionEnded := false
	if exitedFirst && cg == nil {
		sessionEnded = e.sessionEnded(pid, before)
		exitedFirst = sessionEnded
	}
	res.Process = id
	if res.Aborted = e.started(pid, idErr, req.OnStart, exitedFirst, &res); res.Aborted != nil {
		e.logger.LogAttrs(ctx, slog.LevelWarn, "order process refused after start; killing it",
			slog.Int("pid", pid), slog.String("error", res.Aborted.Error()))
		e.killGroup(ctx, pid, unix.SIGKILL)
		if cg != nil {
			if err := cg.kill(); err != nil {
				e.logger.LogAttrs(ctx, slog.LevelWarn, "kill order cgroup", slog.String("error", err.Error()))
			}
		}
		waitErr = e.leaderGone(ctx, pid, exited)
	} else {
		if req.Timeout > 0 {
			// The timeout counts from the start, not from the end of
			// OnStart; one that passed meanwhile fires at once.
			req.Timeout = max(req.Timeout-time.Since(start), time.Nanosecond)
		}
		waitErr = e.supervise(ctx, orderProcs{pgid: pid, cg: cg, before: before}, req, signals, exited, &res)
	}
	res.Duration = time.Since(start)
	stuck := errors.Is(waitErr, errLeaderStuck)
	if stuck {
		e.logger.LogAttrs(ctx, slog.LevelWarn, "the order's leader did not die after SIGKILL (uninterruptible sleep?); the order ends without it, unverified",
			slog.Int("pid", pid), slog.Duration("waited", leaderGoneTimeout))
	} else if waitErr != nil {
		e.logger.LogAttrs(ctx, slog.LevelWarn, "waitid on order process failed",
			slog.Int("pid", pid), slog.String("error", waitErr.Error()))
	}

	e.killGroup(ctx, pid, unix.SIGKILL)
	// The cgroup, or else the session's other groups, are ended before
	// the pipes are drained: a process of the order that holds them open
	// is killed instead of being waited for. The session is ended before
	// the leader is reaped, which keeps its id from being reused.
	var cgErr error
	sessionGone := true
	if cg != nil {
		cgErr = cg.end()
	} else if !sessionEnded {
		sessionGone = e.killSession(ctx, pid, before, realLook)
	}
	// Then what left the session, found as the worker's children (and,
	// in a cgroup, the killed ones reaped): the leader is still
	// unreaped, so the pids since its start are still the order's.
	adoptedGone := true
	if adopting {
		res.Adopted, adoptedGone = e.endAdopted(ctx, pid, res.Process.StartTime, before)
	}
	if stuck {
		// It has its SIGKILL and dies when its sleep ends; it is reaped
		// then. Until then it holds its pid, and so its group and
		// session ids: nothing later can be mistaken for it.
		go func() {
			<-exited
			_ = cmd.Wait()
			e.leaderReaped(pid)
		}()
	} else if err := cmd.Wait(); err != nil {
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) { // that is the normal report of a non-zero exit or a signal
			e.logger.LogAttrs(ctx, slog.LevelWarn, "wait for order process",
				slog.Int("pid", pid), slog.String("error", err.Error()))
		}
	}
	if !stuck {
		e.leaderReaped(pid)
	}
	if adopting {
		// Once the leader is reaped: a dead leader stops the look.
		e.reapStrays()
	}
	if cut, err := pp.wait(pipeDrainDelay); cut && stuck {
		// The leader itself may hold them.
		e.logger.LogAttrs(ctx, slog.LevelWarn, "the order's output was cut: its leader did not die", slog.Int("pid", pid))
	} else if cut {
		res.Escaped = true
		e.logger.LogAttrs(ctx, slog.LevelWarn, "a process outside the order's group held its output open; output may be incomplete",
			slog.Int("pid", pid))
	} else if err != nil {
		e.logger.LogAttrs(ctx, slog.LevelWarn, "copy order input or output",
			slog.Int("pid", pid), slog.String("error", err.Error()))
	}
	if !adoptedGone && cg == nil {
		// An orphan of the order the worker could not end (one it may
		// not signal, or still dying) lives on.
		res.Escaped = true
	}
	// confirmGroupGone needs the leader reaped.
	res.GroupGone = !stuck && e.confirmGroupGone(ctx, pid) && sessionGone
	switch {
	case res.Escaped:
		// Whatever ended, something of the order lives on.
	case cg != nil && cgErr == nil:
		res.Verified = VerifiedCgroup
	case cg != nil:
		e.logger.LogAttrs(ctx, slog.LevelWarn, "order cgroup not verified empty",
			slog.Int("pid", pid), slog.String("cgroup", cg.path), slog.String("error", cgErr.Error()))
	case res.GroupGone && adopting && adoptedGone:
		res.Verified = VerifiedSubreaper
	case res.GroupGone:
		res.Verified = VerifiedGroup
	}

	if ps := cmd.ProcessState; ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
			switch {
			case ws.Exited():
				code := ws.ExitStatus()
				res.ExitCode = &code
			case ws.Signaled():
				res.Signal = signalName(ws.Signal())
				if ws.Signal() == unix.SIGKILL && !res.TimedOut && !res.Canceled && res.Aborted == nil && !stuck {
					res.OOMKill = e.oomKilled(req.CgroupParent)
				}
			}
		}
	}
	if stdout != nil {
		res.Stdout, res.StdoutSpill = stdout.output(), stdout.spilled()
	}
	if stderr != nil {
		res.Stderr, res.StderrSpill = stderr.output(), stderr.spilled()
	}
	return res
}

// exitedBeforeRecord reports whether the leader pid exits before OnStart
// is to be called: within req.ExitWait, or, for an order without a
// cgroup, later while the leader stays runnable (running, waiting for
// a processor, or in a short uninterruptible sleep: a page read in)
// and alone in its session (leaderAlone), until req.AloneWait has passed
// since the call, on the clock: counted in steps of ExitWait, each
// look's cost (a stat read, and under fork load a scan of the pids since
// the start) came on top, and 30 s took 39 s under load, 60 s with 1 ms
// steps 195 – 296 s (docs/decisions.md, hH25, hD26). On a loaded host a
// command of a millisecond waits that long for a processor: handed over as running, its record
// was committed on its own, a flushed commit more for each of them
// (docs/decisions.md, "The backlog against its floor, profiled
// (hC24)"). The record is what a successor finds the order's other
// processes by; a leader alone has none, and dies with the worker
// (Pdeathsig), so the longer wait leaves nothing unrecorded that the
// first one did not: a process the leader forks is seen at the next
// look, at most ExitWait later. A leader whose parent-death signal the
// kernel cleared (diesWithWorker) would outlive the worker: it is not
// waited for. Nor is a leader that sleeps (on a child, a pipe, a
// timer): it is not about to exit.
func (e *Executor) exitedBeforeRecord(exited chan error, req Request, pid int, cg *orderCgroup, before *pidReading) bool {
	deadline := e.now().Add(req.AloneWait)
	if leaderExitedWithin(exited, req.ExitWait, pid) {
		return true
	}
	if cg != nil || req.ExitWait <= 0 {
		return false
	}
	for left := deadline.Sub(e.now()); left > 0; left = deadline.Sub(e.now()) {
		if !e.leaderAlone(pid, before) || !diesWithWorker(pid, req.Credential) {
			// Or it exited since the last look: a zombie is not
			// runnable.
			return exitedUnheard(pid)
		}
		if leaderExitedWithin(exited, min(req.ExitWait, left), pid) {
			return true
		}
	}
	return false
}

// leaderAlone reports whether the leader sid is runnable (or in an
// uninterruptible sleep, which a fresh executable's page faults make on
// a loaded host) and no other process of its session is alive, judged
// as sessionEnded judges a dead leader's session (sessionAlone, else
// the pids handed out since the leader's start). The leader lives, so it may fork right after: the
// caller looks again. Any doubt answers false.
func (e *Executor) leaderAlone(sid int, before *pidReading) bool {
	if st, err := readStat(sid); err != nil || st.state != 'R' && st.state != 'D' {
		return false
	}
	if e.host.sessionAlone(sid) {
		return true
	}
	pids, last, err := e.sessionPids(sid, before)
	return err == nil && last >= 0 && !sessionLive(sid, pids, realLook)
}

// leaderExitedWithin reports whether the leader pid has exited within d
// (at once when d is zero): its exit arrived on exited, or, once d has
// passed, the leader is dead though its exit has not arrived yet
// (exitedUnheard). The exit is put back for supervise: exited holds one
// value and gets one; one not arrived yet arrives there later.
func leaderExitedWithin(exited chan error, d time.Duration, pid int) bool {
	select {
	case err := <-exited:
		exited <- err
		return true
	default:
	}
	if d <= 0 {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-exited:
		exited <- err
		return true
	case <-t.C:
		return exitedUnheard(pid)
	}
}

// exitedUnheard reports whether the leader pid, our unreaped child, has
// exited, without waiting and without reaping it. Its exit reaches
// exited through the pipes' loop (or a goroutine in waitid), a wake-up
// of the worker's own: on a loaded host the worker's threads may not run
// for longer than ExitWait, and a leader that was done long before its
// wait ran out was handed over as running, its record committed on its
// own, a flushed commit more for the order (docs/decisions.md, "The
// backlog against its floor, profiled (hC24)"). What is asked of an
// exited leader then (the session ended, without a cgroup) is asked of
// this one alike.
func exitedUnheard(pid int) bool {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if err == unix.EINTR {
			continue
		}
		return err == nil && siginfoPid(&info) == int32(pid)
	}
}

// identifyLeader is the just started leader pid's identity, in the
// order's cgroup cg if it has one.
func (e *Executor) identifyLeader(pid int, cg *orderCgroup) (Process, error) {
	m, err := e.machine()
	if err != nil {
		return Process{}, err
	}
	var cgPath string
	if cg != nil {
		cgPath = cg.path
	}
	return identify(pid, m, cgPath)
}

// started hands the leader pid, identified as res.Process (err: it
// could not be), to onStart, saying whether it has exited already. A
// non-nil error means the process must not run on.
func (e *Executor) started(pid int, err error, onStart func(Process, bool) error, exited bool, res *Result) error {
	if onStart == nil {
		if err != nil {
			// Nobody asked for the identity: the order may run.
			e.logger.LogAttrs(context.Background(), slog.LevelWarn, "identify order process",
				slog.Int("pid", pid), slog.String("error", err.Error()))
		}
		return nil
	}
	if err != nil {
		return err
	}
	if err := onStart(res.Process, exited); err != nil {
		return fmt.Errorf("on start: %w", err)
	}
	return nil
}

// orderProcs is what supervise needs to find every process of a running
// order: the leader's group pgid, and the order's cgroup or else the
// reading of the pid allocator taken before the start (see killSession).
type orderProcs struct {
	pgid   int
	cg     *orderCgroup
	before *pidReading
}

// supervise waits for the leader to exit while enforcing the timeout, the
// cancel signals and ctx. It returns the error of the wait, if any.
func (e *Executor) supervise(ctx context.Context, o orderProcs, req Request, signals <-chan syscall.Signal, exited <-chan error, res *Result) error {
	pgid := o.pgid
	var timeout <-chan time.Time
	if req.Timeout > 0 {
		t := time.NewTimer(req.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	var grace <-chan time.Time
	var graceTimer *time.Timer
	var stuck <-chan time.Time // the leader's time to die after the grace's SIGKILL
	defer func() {
		if graceTimer != nil {
			graceTimer.Stop()
		}
	}()
	terminate := func(sig syscall.Signal) {
		e.killGroup(ctx, pgid, sig)
		cont := sig != unix.SIGKILL && sig != unix.SIGCONT
		if cont {
			// A stopped process (SIGSTOP, job control) only handles
			// the signal once it runs again; without this it would
			// sleep through it and the grace, and die by SIGKILL
			// (systemd sends SIGCONT after SIGTERM too).
			e.killGroup(ctx, pgid, unix.SIGCONT)
		}
		// The rest of the order gets the same signal and the same grace:
		// a process that moved to a group of its own (setpgid, a job of
		// a shell with job control) or, in a cgroup, left the session.
		e.signalRest(ctx, o, sig, cont)
		if graceTimer == nil {
			graceTimer = time.NewTimer(max(req.KillGrace, 0))
			grace = graceTimer.C
		}
	}
	done := ctx.Done()
	for {
		var sig syscall.Signal // what to send the group for this wake-up
		timedOut, canceled := res.TimedOut, res.Canceled
		select {
		case err := <-exited:
			return err
		case <-timeout:
			timeout = nil
			res.TimedOut = true
			sig = unix.SIGTERM
		case s, ok := <-signals:
			if !ok {
				signals = nil
				continue
			}
			res.Canceled = true
			sig = cmp.Or(s, unix.SIGTERM)
		case <-done:
			done = nil
			res.Canceled = true
			sig = unix.SIGTERM
		case <-grace:
			grace = nil
			e.killGroup(ctx, pgid, unix.SIGKILL)
			t := time.NewTimer(leaderGoneTimeout)
			defer t.Stop()
			stuck = t.C
			continue
		case <-stuck:
			stuck = nil
			// Only a leader that has its SIGKILL can be left to die on
			// its own: it never runs another instruction. One the
			// worker may not signal (an unprivileged worker, a
			// set-user-ID leader) runs on, and is waited for.
			if err := unix.Kill(pgid, unix.SIGKILL); err != nil {
				e.logger.LogAttrs(ctx, slog.LevelWarn, "the order's leader outlived the grace and cannot be killed; waiting for it",
					slog.Int("pid", pgid), slog.String("error", err.Error()))
				continue
			}
			return errLeaderStuck
		}
		// select picks at random among ready cases: a leader that exited
		// by itself at the same moment finished its order, and is not
		// reported as ended by the timeout or the cancel.
		select {
		case err := <-exited:
			res.TimedOut, res.Canceled = timedOut, canceled
			return err
		default:
		}
		terminate(sig)
	}
}

// leaderGone waits for the leader pid, which was sent SIGKILL, to exit, as
// supervise does after a grace: for leaderGoneTimeout, then it returns
// errLeaderStuck when the leader has its SIGKILL (it never runs another
// instruction of the order), or else waits on for it (one the worker may
// not signal).
func (e *Executor) leaderGone(ctx context.Context, pid int, exited <-chan error) error {
	t := time.NewTimer(leaderGoneTimeout)
	defer t.Stop()
	select {
	case err := <-exited:
		return err
	case <-t.C:
	}
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		e.logger.LogAttrs(ctx, slog.LevelWarn, "the order's leader was refused and cannot be killed; waiting for it",
			slog.Int("pid", pid), slog.String("error", err.Error()))
		return <-exited
	}
	return errLeaderStuck
}

// signalName returns the conventional name of sig ("SIGTERM").
func signalName(sig syscall.Signal) string {
	if name := unix.SignalName(sig); name != "" {
		return name
	}
	return fmt.Sprintf("signal %d", int(sig))
}
