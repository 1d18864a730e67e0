package executor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/orderly-run/orderly/internal/order"
)

func newTestExecutor(t testing.TB) *Executor {
	return New(slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})))
}

// baseRequest runs path with a minimal environment, capturing both streams.
func baseRequest(path string, args ...string) Request {
	return Request{
		Path:          path,
		Argv:          append([]string{filepath.Base(path)}, args...),
		Env:           []string{"PATH=/usr/bin:/bin"},
		Dir:           "/",
		Timeout:       30 * time.Second,
		KillGrace:     2 * time.Second,
		MaxOutput:     1 << 20,
		CaptureStdout: true,
		CaptureStderr: true,
	}
}

func sh(script string) Request {
	return baseRequest("/bin/sh", "-c", script)
}

func exitCode(t *testing.T, res Result) int {
	t.Helper()
	if res.StartErr != nil {
		t.Fatalf("StartErr = %v", res.StartErr)
	}
	if res.ExitCode == nil {
		t.Fatalf("ExitCode = nil (Signal %q), want an exit", res.Signal)
	}
	return *res.ExitCode
}

// liveInGroup lists the processes of group pgid that are not zombies, as
// ps sees them: an independent check of what the executor claims.
func liveInGroup(t *testing.T, pgid int) []string {
	t.Helper()
	out, err := exec.Command("ps", "-e", "-o", "pgid=,stat=,pid=,args=").Output()
	if err != nil {
		t.Fatalf("ps: %v", err)
	}
	var live []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != strconv.Itoa(pgid) || strings.HasPrefix(f[1], "Z") {
			continue
		}
		live = append(live, line)
	}
	return live
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	st, ok := parseStat(stat)
	return ok && st.alive()
}

// assertGroupGone checks the executor's claim and ps agree that nothing of
// the group survived, and that pids the script reported are dead.
func assertGroupGone(t *testing.T, res Result, pids ...int) {
	t.Helper()
	if !res.GroupGone {
		t.Error("GroupGone = false")
	}
	if res.Pid <= 0 {
		t.Fatalf("Pid = %d", res.Pid)
	}
	if live := liveInGroup(t, res.Pid); len(live) > 0 {
		t.Errorf("processes of group %d survive:\n%s", res.Pid, strings.Join(live, "\n"))
	}
	for _, pid := range pids {
		if processAlive(pid) {
			t.Errorf("process %d survives", pid)
		}
	}
}

// firstLinePID parses the pid a script printed on its first line.
func firstLinePID(t *testing.T, out []byte) int {
	t.Helper()
	line, _, _ := bytes.Cut(out, []byte("\n"))
	pid, err := strconv.Atoi(string(line))
	if err != nil {
		t.Fatalf("script did not print a pid first: %q", out)
	}
	return pid
}

func TestRunExitCodes(t *testing.T) {
	t.Parallel()
	e := newTestExecutor(t)
	tests := []struct {
		name string
		req  Request
		code int
	}{
		{"true", baseRequest("/bin/true"), 0},
		{"false", baseRequest("/bin/false"), 1},
		{"exit 42", sh("exit 42"), 42},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := e.Run(t.Context(), tt.req, nil)
			if got := exitCode(t, res); got != tt.code {
				t.Errorf("exit code = %d, want %d", got, tt.code)
			}
			if res.Signal != "" || res.TimedOut || res.Canceled {
				t.Errorf("Signal=%q TimedOut=%v Canceled=%v", res.Signal, res.TimedOut, res.Canceled)
			}
			if res.Duration <= 0 {
				t.Errorf("Duration = %v", res.Duration)
			}
			assertGroupGone(t, res)
		})
	}
}

func TestRunStdoutStderr(t *testing.T) {
	t.Parallel()
	res := newTestExecutor(t).Run(t.Context(), sh("echo out; echo err >&2"), nil)
	exitCode(t, res)
	for _, s := range []struct {
		name string
		got  []byte
		want string
		sum  []byte
		n    int64
	}{
		{"stdout", res.Stdout.Content, "out\n", res.Stdout.SHA256, res.Stdout.Bytes},
		{"stderr", res.Stderr.Content, "err\n", res.Stderr.SHA256, res.Stderr.Bytes},
	} {
		if string(s.got) != s.want {
			t.Errorf("%s = %q, want %q", s.name, s.got, s.want)
		}
		if sum := sha256.Sum256([]byte(s.want)); !bytes.Equal(s.sum, sum[:]) || s.n != int64(len(s.want)) {
			t.Errorf("%s: Bytes=%d SHA256=%x", s.name, s.n, s.sum)
		}
	}
	if res.Stdout.Truncated || res.Stderr.Truncated {
		t.Error("Truncated set on a short stream")
	}
}

func TestRunStdin(t *testing.T) {
	t.Parallel()
	e := newTestExecutor(t)
	binary := make([]byte, 0, 3*256)
	for range 3 {
		for b := range 256 {
			binary = append(binary, byte(b)) // includes NUL, CR, LF, 0xff
		}
	}
	big := bytes.Repeat([]byte("0123456789abcdef\x00"), 20_000) // more than a pipe buffer
	for _, tt := range []struct {
		name  string
		stdin []byte
	}{
		{"nil is /dev/null", nil},
		{"empty", []byte{}},
		{"binary with NUL", binary},
		{"larger than a pipe", big},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req := baseRequest("/bin/cat")
			req.Stdin = tt.stdin
			req.MaxOutput = 1 << 30
			res := e.Run(t.Context(), req, nil)
			if exitCode(t, res) != 0 {
				t.Fatalf("cat failed: %s", res.Stderr.Content)
			}
			if !bytes.Equal(res.Stdout.Content, tt.stdin) || res.Stdout.Bytes != int64(len(tt.stdin)) {
				t.Errorf("stdout has %d bytes (Bytes %d), want the %d of stdin", len(res.Stdout.Content), res.Stdout.Bytes, len(tt.stdin))
			}
		})
	}
}

func TestRunStdinNotRead(t *testing.T) {
	t.Parallel()
	// The process exits without reading a stdin larger than the pipe
	// buffer; Run must not hang feeding it.
	req := baseRequest("/bin/true")
	req.Stdin = bytes.Repeat([]byte("x"), 1<<20)
	res := newTestExecutor(t).Run(t.Context(), req, nil)
	if exitCode(t, res) != 0 {
		t.Fatal("true failed")
	}
}

func TestRunLargeOutputCapped(t *testing.T) {
	t.Parallel()
	const total = 31457280 // 30 MiB
	const limit = 1 << 20
	req := baseRequest("/usr/bin/head", "-c", strconv.Itoa(total), "/dev/zero")
	req.MaxOutput = limit
	var seen int64
	var mu sync.Mutex
	req.OnOutput = func(stream string, p []byte) {
		mu.Lock()
		defer mu.Unlock()
		if stream == "stdout" {
			seen += int64(len(p))
		}
	}
	res := newTestExecutor(t).Run(t.Context(), req, nil)
	if exitCode(t, res) != 0 {
		t.Fatalf("head failed: %s", res.Stderr.Content)
	}
	out := res.Stdout
	if out.Bytes != total || !out.Truncated {
		t.Fatalf("Bytes=%d Truncated=%v, want %d true", out.Bytes, out.Truncated, total)
	}
	if sum := sha256.Sum256(make([]byte, total)); !bytes.Equal(out.SHA256, sum[:]) {
		t.Errorf("SHA256 = %x, want %x", out.SHA256, sum)
	}
	marker := order.TruncationMarker(total - limit)
	wantContent := string(make([]byte, limit/2)) + marker + string(make([]byte, limit/2))
	if string(out.Content) != wantContent {
		t.Errorf("Content has %d bytes, want %d: half a MiB of zeros, %q, half a MiB of zeros", len(out.Content), len(wantContent), marker)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen != total {
		t.Errorf("OnOutput saw %d stdout bytes, want %d", seen, total)
	}
}

func TestRunStreamNotCaptured(t *testing.T) {
	t.Parallel()
	req := sh("echo out; echo err >&2")
	req.CaptureStdout = false
	var streams []string
	var mu sync.Mutex
	req.OnOutput = func(stream string, p []byte) {
		mu.Lock()
		defer mu.Unlock()
		streams = append(streams, stream)
	}
	res := newTestExecutor(t).Run(t.Context(), req, nil)
	exitCode(t, res)
	if res.Stdout.Bytes != 0 || res.Stdout.Content != nil || res.Stdout.SHA256 != nil {
		t.Errorf("uncaptured stdout recorded something: %+v", res.Stdout)
	}
	if string(res.Stderr.Content) != "err\n" {
		t.Errorf("stderr = %q", res.Stderr.Content)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range streams {
		if s != "stderr" {
			t.Errorf("OnOutput saw stream %q", s)
		}
	}
}

func TestRunEnvIsExactlyTheGivenEnv(t *testing.T) {
	// Not parallel: t.Setenv.
	t.Setenv("ORDERLY_EXECUTOR_CANARY", "leaked")
	e := newTestExecutor(t)
	for _, tt := range []struct {
		name string
		env  []string
		want string
	}{
		{"given", []string{"A=1", "B=two words"}, "A=1\nB=two words\n"},
		{"nil means empty", nil, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := baseRequest("/usr/bin/env")
			req.Env = tt.env
			res := e.Run(t.Context(), req, nil)
			exitCode(t, res)
			if got := string(res.Stdout.Content); got != tt.want {
				t.Errorf("env printed %q, want %q", got, tt.want)
			}
		})
	}
}

// TestRunInheritsNoDescriptor: a descriptor the worker inherited without
// close-on-exec (its launcher's) does not pass to the order's process.
func TestRunInheritsNoDescriptor(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// dup2 leaves the copy without close-on-exec, as an inherited one is.
	const fd = 211
	if err := unix.Dup2(int(f.Fd()), fd); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	res := newTestExecutor(t).Run(t.Context(), sh("ls /proc/self/fd"), nil)
	if code := exitCode(t, res); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, res.Stderr.Content)
	}
	for _, name := range strings.Fields(string(res.Stdout.Content)) {
		if name == strconv.Itoa(fd) {
			t.Fatalf("the order's process got the worker's descriptor %d: /proc/self/fd holds %q", fd, res.Stdout.Content)
		}
	}
}

func TestRunDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	req := baseRequest("/bin/pwd")
	req.Dir = dir
	res := newTestExecutor(t).Run(t.Context(), req, nil)
	exitCode(t, res)
	if got := strings.TrimSpace(string(res.Stdout.Content)); got != dir {
		t.Errorf("pwd = %q, want %q", got, dir)
	}
}

// needRoot skips a test that switches credentials when not root, except
// under CI=true, which runs as root: there a skip would hide lost
// coverage.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("switching credentials needs root, and CI=true runs as root")
		}
		t.Skip("switching credentials needs root; run the tests as root to cover it")
	}
}

func TestRunCredential(t *testing.T) {
	needRoot(t)
	t.Parallel()
	e := newTestExecutor(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-u"}, "65534"},
		{[]string{"-g"}, "65534"},
		{[]string{"-G"}, "65534"}, // root's supplementary groups are not kept
	} {
		t.Run(strings.Join(tt.args, ""), func(t *testing.T) {
			t.Parallel()
			req := baseRequest("/usr/bin/id", tt.args...)
			req.Credential = &syscall.Credential{Uid: 65534, Gid: 65534}
			res := e.Run(t.Context(), req, nil)
			if exitCode(t, res) != 0 {
				t.Fatalf("id failed: %s", res.Stderr.Content)
			}
			if got := strings.TrimSpace(string(res.Stdout.Content)); got != tt.want {
				t.Errorf("id %v = %q, want %q", tt.args, got, tt.want)
			}
		})
	}
}

// TestRunCredentialStreamsByName: a command run as another user reopens
// its own stdin, stdout and stderr by name (/dev/stdin is
// /proc/self/fd/0), as scripts do; the pipes are the order user's, not
// the worker's with mode 0600.
func TestRunCredentialStreamsByName(t *testing.T) {
	needRoot(t)
	t.Parallel()
	req := sh("cat /dev/stdin > /dev/stdout; echo to-err > /dev/stderr")
	req.Credential = &syscall.Credential{Uid: 65534, Gid: 65534}
	req.Stdin = []byte("from stdin\n")
	res := newTestExecutor(t).Run(t.Context(), req, nil)
	if exitCode(t, res) != 0 || string(res.Stdout.Content) != "from stdin\n" || string(res.Stderr.Content) != "to-err\n" {
		t.Fatalf("as nobody: exit %v, stdout %q, stderr %q", res.ExitCode, res.Stdout.Content, res.Stderr.Content)
	}
}

func TestRunStartErrors(t *testing.T) {
	t.Parallel()
	e := newTestExecutor(t)
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-exec")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	private := filepath.Join(dir, "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	tests := []struct {
		name     string
		req      func() Request
		wantIs   error
		rootOnly bool
	}{
		{"missing file", func() Request { return baseRequest("/nonexistent/cmd") }, fs.ErrNotExist, false},
		{"not executable", func() Request { return baseRequest(notExec) }, fs.ErrPermission, false},
		{"a directory", func() Request { return baseRequest(dir) }, fs.ErrPermission, false},
		{"relative path", func() Request { return baseRequest("bin/true") }, nil, false},
		{"missing dir", func() Request {
			r := baseRequest("/bin/true")
			r.Dir = filepath.Join(dir, "missing")
			return r
		}, fs.ErrNotExist, false},
		{"credential cannot enter dir", func() Request {
			r := baseRequest("/bin/true")
			r.Dir, r.Credential = private, nobody
			return r
		}, fs.ErrPermission, true},
		{"credential cannot exec", func() Request {
			p := filepath.Join(private, "tool")
			r := baseRequest(p)
			r.Credential = nobody
			return r
		}, fs.ErrPermission, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.rootOnly && os.Geteuid() != 0 {
				if os.Getenv("CI") == "true" {
					t.Fatal("needs root, and CI=true runs as root")
				}
				t.Skip("needs root")
			}
			res := e.Run(t.Context(), tt.req(), nil)
			if res.StartErr == nil {
				t.Fatalf("StartErr = nil, result %+v", res)
			}
			if tt.wantIs != nil && !errors.Is(res.StartErr, tt.wantIs) {
				t.Errorf("StartErr = %v, want %v", res.StartErr, tt.wantIs)
			}
			if res.ExitCode != nil || res.Pid != 0 || !res.GroupGone {
				t.Errorf("ExitCode=%v Pid=%d GroupGone=%v", res.ExitCode, res.Pid, res.GroupGone)
			}
		})
	}
}

func TestRunKilledBySignal(t *testing.T) {
	t.Parallel()
	res := newTestExecutor(t).Run(t.Context(), sh("kill -USR1 $$"), nil)
	if res.ExitCode != nil || res.Signal != "SIGUSR1" {
		t.Fatalf("ExitCode=%v Signal=%q, want nil SIGUSR1", res.ExitCode, res.Signal)
	}
	if res.Canceled || res.TimedOut {
		t.Error("a signal the process sent itself is neither a cancel nor a timeout")
	}
}

// TestRunKilledByAPlainSIGKILLIsNoOOMKill: a leader killed by a SIGKILL
// the worker did not send, with no OOM kill counted meanwhile (a kill -9,
// here its own), has no OOMKill: the OOM killer is named only when the
// kernel counted one. Not parallel: another test's OOM kill would count.
func TestRunKilledByAPlainSIGKILLIsNoOOMKill(t *testing.T) {
	e := newTestExecutor(t)
	if res := e.Run(t.Context(), sh("true"), nil); exitCode(t, res) != 0 {
		t.Fatal("true failed")
	}
	res := e.Run(t.Context(), sh("kill -KILL $$"), nil)
	if res.Signal != "SIGKILL" || res.OOMKill != "" {
		t.Fatalf("Signal=%q OOMKill=%q, want SIGKILL and no OOM kill", res.Signal, res.OOMKill)
	}
}

// TestRunLeaderExitKillsGroup is KillMode=control-group: the leader exits at
// once, leaving a child behind that holds stdout; the child is killed and
// Run returns without waiting for it or for the pipe drain delay.
func TestRunLeaderExitKillsGroup(t *testing.T) {
	t.Parallel()
	start := time.Now()
	res := newTestExecutor(t).Run(t.Context(), sh("sleep 100 & echo $!"), nil)
	if exitCode(t, res) != 0 {
		t.Fatal("sh failed")
	}
	if took := time.Since(start); took >= pipeDrainDelay {
		t.Errorf("Run took %v: it waited for the child or the pipe drain delay", took)
	}
	assertGroupGone(t, res, firstLinePID(t, res.Stdout.Content))
}

func TestRunTimeoutKillsGroup(t *testing.T) {
	t.Parallel()
	// Ignores SIGTERM, and so do its children, which inherit the ignore.
	req := sh(`trap "" TERM; sleep 100 & echo $!; sleep 100; wait`)
	// Long enough for a starved shell to set its trap and print the pid
	// before SIGTERM comes.
	req.Timeout = 2 * time.Second
	req.KillGrace = 300 * time.Millisecond
	res := newTestExecutor(t).Run(t.Context(), req, nil)
	if !res.TimedOut || res.Canceled {
		t.Fatalf("TimedOut=%v Canceled=%v", res.TimedOut, res.Canceled)
	}
	if res.ExitCode != nil || res.Signal != "SIGKILL" {
		t.Errorf("ExitCode=%v Signal=%q, want nil SIGKILL", res.ExitCode, res.Signal)
	}
	if res.Duration < req.Timeout+req.KillGrace {
		t.Errorf("Duration = %v: SIGKILL came before timeout+grace", res.Duration)
	}
	assertGroupGone(t, res, firstLinePID(t, res.Stdout.Content))
}

func TestRunTimeoutTermIsEnough(t *testing.T) {
	t.Parallel()
	req := sh("sleep 100 & sleep 100")
	req.Timeout = 100 * time.Millisecond
	req.KillGrace = time.Minute
	res := newTestExecutor(t).Run(t.Context(), req, nil)
	if !res.TimedOut || res.Signal != "SIGTERM" {
		t.Fatalf("TimedOut=%v Signal=%q, want true SIGTERM", res.TimedOut, res.Signal)
	}
	if res.Duration > 10*time.Second {
		t.Errorf("Duration = %v: waited for the grace period although SIGTERM worked", res.Duration)
	}
	assertGroupGone(t, res)
}

// startedScript runs script, which must print a pid line once it is ready,
// and calls ready (once) when that output arrives.
func startedScript(script string, ready func()) Request {
	req := sh(script)
	var once sync.Once
	req.OnOutput = func(stream string, p []byte) {
		if stream == "stdout" && bytes.Contains(p, []byte("\n")) {
			once.Do(ready)
		}
	}
	return req
}

func TestRunCancelSignal(t *testing.T) {
	t.Parallel()
	e := newTestExecutor(t)
	for _, tt := range []struct {
		name       string
		script     string
		send       syscall.Signal
		wantSignal string
	}{
		{"SIGTERM", "sleep 100 & echo $!; sleep 100", syscall.SIGTERM, "SIGTERM"},
		{"zero means SIGTERM", "sleep 100 & echo $!; sleep 100", 0, "SIGTERM"},
		{"SIGKILL", "sleep 100 & echo $!; sleep 100", syscall.SIGKILL, "SIGKILL"},
		{"ignored SIGHUP then grace", `trap "" HUP; sleep 100 & echo $!; sleep 100`, syscall.SIGHUP, "SIGKILL"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			signals := make(chan syscall.Signal, 1)
			req := startedScript(tt.script, func() { signals <- tt.send })
			// The grace ends the case that ignores its signal; the others
			// end at the signal, which on a loaded machine took longer
			// than 200 ms once (SIGKILL after SIGTERM): a grace they never
			// need to reach.
			req.KillGrace = time.Minute
			if tt.wantSignal == "SIGKILL" && tt.send != syscall.SIGKILL {
				req.KillGrace = 200 * time.Millisecond
			}
			res := e.Run(t.Context(), req, signals)
			if !res.Canceled || res.TimedOut {
				t.Fatalf("Canceled=%v TimedOut=%v", res.Canceled, res.TimedOut)
			}
			if res.ExitCode != nil || res.Signal != tt.wantSignal {
				t.Errorf("ExitCode=%v Signal=%q, want nil %s", res.ExitCode, res.Signal, tt.wantSignal)
			}
			assertGroupGone(t, res, firstLinePID(t, res.Stdout.Content))
		})
	}
}

func TestRunClosedSignalsChannel(t *testing.T) {
	t.Parallel()
	signals := make(chan syscall.Signal)
	close(signals)
	res := newTestExecutor(t).Run(t.Context(), sh("exit 3"), signals)
	if exitCode(t, res) != 3 || res.Canceled {
		t.Fatalf("exit %v Canceled=%v", res.ExitCode, res.Canceled)
	}
}

func TestRunContextCanceled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req := startedScript("sleep 100 & echo $!; sleep 100", cancel)
	res := newTestExecutor(t).Run(ctx, req, nil)
	if !res.Canceled || res.Signal != "SIGTERM" {
		t.Fatalf("Canceled=%v Signal=%q, want true SIGTERM", res.Canceled, res.Signal)
	}
	assertGroupGone(t, res, firstLinePID(t, res.Stdout.Content))
}

func TestRunContextDoneBeforeStart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	res := newTestExecutor(t).Run(ctx, baseRequest("/bin/true"), nil)
	if !errors.Is(res.StartErr, context.Canceled) || !res.Canceled || res.Pid != 0 {
		t.Fatalf("StartErr=%v Canceled=%v Pid=%d", res.StartErr, res.Canceled, res.Pid)
	}
}

// TestRunEscapedProcessCannotHang starts a process in its own session that
// keeps stdout open: it escapes the group, but Run still returns after the
// pipe drain delay.
func TestRunEscapedProcessCannotHang(t *testing.T) {
	t.Parallel()
	fifo := filepath.Join(t.TempDir(), "escaped")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// The leader waits on the fifo until the escapee has left the group.
	script := "setsid sh -c 'echo $$; echo > " + fifo + "; exec sleep 100' & read x < " + fifo
	start := time.Now()
	res := newTestExecutor(t).Run(t.Context(), sh(script), nil)
	escaped := firstLinePID(t, res.Stdout.Content)
	t.Cleanup(func() { _ = unix.Kill(escaped, unix.SIGKILL) })
	if exitCode(t, res) != 0 {
		t.Fatal("sh failed")
	}
	if took := time.Since(start); took > pipeDrainDelay+5*time.Second {
		t.Errorf("Run took %v with an escapee holding stdout", took)
	}
	if !processAlive(escaped) {
		t.Error("the escapee is already dead: the test did not test an escape")
	}
	if !res.GroupGone {
		t.Error("GroupGone = false: the group itself is gone, only an escapee lives")
	}
	// The group is gone, but the order's end is not verified: a process
	// of the order was seen living on.
	if !res.Escaped || res.Verified != "" {
		t.Errorf("Escaped=%v Verified=%q, want true and unverified", res.Escaped, res.Verified)
	}
}

func TestParseStat(t *testing.T) {
	t.Parallel()
	// The fields after state, up to starttime (22) and one beyond.
	const rest = " 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 "
	for _, tt := range []struct {
		in   string
		want procStat
		ok   bool
	}{
		{"123 (sleep) S 1 120 121" + rest + "98765 4096", procStat{'S', 1, 120, 121, 98765}, true},
		{"123 (a b) c) Z 1 77 77" + rest + "5 0", procStat{'Z', 1, 77, 77, 5}, true},
		{"123 (x", procStat{}, false},
		{"123 (x) R 1 120 120 0", procStat{}, false},
		{"123 (x) R 1 120 120" + rest + "-5", procStat{}, false},
	} {
		got, ok := parseStat([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseStat(%q) = %+v %v, want %+v %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// BenchmarkRunTrue is one order's worth of Run around /bin/true: own group,
// both streams captured, timeout armed, group and session confirmed gone.
// cpu-µs/op is the worker's own CPU time per order (this process's user
// and system time, the command's excluded), steadier than ns/op on a
// shared machine.
func BenchmarkRunTrue(b *testing.B) {
	e := New(nil)
	req := baseRequest("/bin/true")
	ctx := b.Context()
	b.ReportAllocs()
	var before, after unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &before)
	for b.Loop() {
		res := e.Run(ctx, req, nil)
		if res.ExitCode == nil || *res.ExitCode != 0 || !res.GroupGone {
			b.Fatalf("result %+v", res)
		}
	}
	_ = unix.Getrusage(unix.RUSAGE_SELF, &after)
	cpu := func(r unix.Rusage) int64 { return r.Utime.Nano() + r.Stime.Nano() }
	b.ReportMetric(float64(cpu(after)-cpu(before))/1e3/float64(b.N), "cpu-µs/op")
}

// BenchmarkRunTrueCgroup is BenchmarkRunTrue in an order cgroup of its
// own (worker.cgroup): made, started into, killed, seen empty, removed.
func BenchmarkRunTrueCgroup(b *testing.B) {
	e := New(nil)
	req := baseRequest("/bin/true")
	req.CgroupParent, req.CgroupName = testCgroupParent(b), "order-bench"
	ctx := b.Context()
	b.ReportAllocs()
	var before, after unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &before)
	for b.Loop() {
		res := e.Run(ctx, req, nil)
		if res.ExitCode == nil || *res.ExitCode != 0 || res.Verified != VerifiedCgroup {
			b.Fatalf("result %+v", res)
		}
	}
	_ = unix.Getrusage(unix.RUSAGE_SELF, &after)
	cpu := func(r unix.Rusage) int64 { return r.Utime.Nano() + r.Stime.Nano() }
	b.ReportMetric(float64(cpu(after)-cpu(before))/1e3/float64(b.N), "cpu-µs/op")
}

// BenchmarkSessionAlone is what the end of an order that forked nothing
// reads to know that its session holds no other process.
func BenchmarkSessionAlone(b *testing.B) {
	h := newHostFiles()
	sid, err := h.lastPidNow()
	if err != nil {
		b.Skip(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		h.sessionAlone(sid)
	}
}

// TestSessionAloneSeesALaterProcess: once a process was started after the
// leader, the leader is not taken to be alone in its session, whoever
// started it (here the test, as an order's job-control shell would).
func TestSessionAloneSeesALaterProcess(t *testing.T) {
	h := newHostFiles()
	if _, err := h.lastPidNow(); err != nil {
		t.Skip(err)
	}
	leader := exec.Command("sleep", "30")
	leader.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := leader.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = leader.Process.Kill(); _ = leader.Wait() }()
	later := exec.Command("/bin/true")
	if err := later.Run(); err != nil {
		t.Fatal(err)
	}
	if h.sessionAlone(leader.Process.Pid) {
		t.Fatalf("pid %d taken to be alone in its session after pid %d was handed out", leader.Process.Pid, later.Process.Pid)
	}
}

// BenchmarkRawExecTrue is the floor: plain os/exec, nothing captured.
func BenchmarkRawExecTrue(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if err := exec.Command("/bin/true").Run(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawExecTrueCaptured is plain os/exec with both streams read into
// buffers, which is most of what Run adds.
func BenchmarkRawExecTrueCaptured(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		var out, errOut bytes.Buffer
		cmd := exec.Command("/bin/true")
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRunStoppedProcessSeesTheTimeout: a process that stopped itself
// (SIGSTOP, or a shell's job control) only handles the timeout's SIGTERM
// once it runs again, so the SIGTERM comes with a SIGCONT, as systemd
// sends one: the order ends by its own handler, not by the SIGKILL after
// the grace.
func TestRunStoppedProcessSeesTheTimeout(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		cancel syscall.Signal // 0: the timeout
	}{{"timeout", 0}, {"cancel with SIGINT", syscall.SIGINT}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			signals := make(chan syscall.Signal, 1)
			req := startedScript(`trap "echo ended; exit 7" TERM INT; echo ready; kill -STOP $$; echo resumed`, func() {
				if tt.cancel != 0 {
					// Give the shell time to stop before the cancel.
					time.AfterFunc(500*time.Millisecond, func() { signals <- tt.cancel })
				}
			})
			if tt.cancel == 0 {
				req.Timeout = 2 * time.Second // time for a starved shell to set its trap
			}
			req.KillGrace = 20 * time.Second
			res := newTestExecutor(t).Run(t.Context(), req, signals)
			if res.ExitCode == nil || *res.ExitCode != 7 {
				t.Errorf("ExitCode=%v Signal=%q, want exit 7 from the trap", res.ExitCode, res.Signal)
			}
			if res.Duration >= req.KillGrace {
				t.Errorf("Duration = %v: the stopped process waited for the kill grace", res.Duration)
			}
			if got := string(res.Stdout.Content); !strings.Contains(got, "ended") {
				t.Errorf("stdout = %q, want the trap's output", got)
			}
			assertGroupGone(t, res)
		})
	}
}

// TestRunKillsTheSessionsOtherGroups: a process that moves to a process
// group of its own (setpgid; a shell with job control, `set -m`, puts
// every background job in one) stays in the order's session, which
// nothing outside the order can join, and is killed with the group when
// the leader exits, holding stdout or not, also when it forks on.
func TestRunKillsTheSessionsOtherGroups(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, script string }{
		{"setpgid", `read pid < <(perl -e '$| = 1; setpgrp(0, 0); print "$$\n"; close STDOUT; close STDERR; exec "sleep", "100"'); echo $pid`},
		{"job control holding stdout", `set -m; sleep 100 & echo $!; sleep 0.1`},
		// The leader waits until the 200 are forked ($1/forked).
		{"forking in its own group", `set -m; (echo $BASHPID; for i in $(seq 200); do sleep 100 & done; : > "$1/forked"; wait) &
			until [ -e "$1/forked" ]; do sleep 0.05; done`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			res := newTestExecutor(t).Run(t.Context(), baseRequest("/bin/bash", "-c", tt.script, "bash", t.TempDir()), nil)
			t.Cleanup(func() { // what a failure left behind
				for _, line := range liveInSession(t, res.Pid) {
					if pid, err := strconv.Atoi(strings.Fields(line)[2]); err == nil {
						_ = unix.Kill(pid, unix.SIGKILL)
					}
				}
			})
			moved := firstLinePID(t, res.Stdout.Content)
			if exitCode(t, res) != 0 {
				t.Fatalf("bash failed: %q", res.Stderr.Content)
			}
			if took := time.Since(start) - res.Duration; took >= pipeDrainDelay {
				t.Errorf("Run took %v after the leader's exit: it waited for the pipes of a process of the order's session", took)
			}
			if processAlive(moved) {
				t.Errorf("process %d, which left the order's group but not its session, survives", moved)
			}
			if live := liveInSession(t, res.Pid); len(live) > 0 {
				t.Errorf("processes of session %d survive:\n%s", res.Pid, strings.Join(live, "\n"))
			}
			if !res.GroupGone || res.Verified != VerifiedGroup {
				t.Errorf("GroupGone=%v Verified=%q", res.GroupGone, res.Verified)
			}
		})
	}
}

// liveInSession lists the processes of session sid that are not zombies,
// as ps sees them.
func liveInSession(t *testing.T, sid int) []string {
	t.Helper()
	out, err := exec.Command("ps", "-e", "-o", "sid=,stat=,pid=,args=").Output()
	if err != nil {
		t.Fatalf("ps: %v", err)
	}
	var live []string
	for line := range strings.SplitSeq(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != strconv.Itoa(sid) || strings.HasPrefix(f[1], "Z") {
			continue
		}
		live = append(live, line)
	}
	return live
}

// TestPidWindow: the pids a process forked since the leader can have.
func TestPidWindow(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name              string
		sid, last, pidMax int
		moved             uint64
		known             bool
		in, out           []int
	}{
		{"few since", 1000, 1003, 32768, 5, true, []int{1001, 1002, 1003}, []int{999, 1000, 1004}},
		{"many since", 1000, 5000, 32768, 4000, true, []int{1001, 3000, 5000}, []int{1000, 5001, 400}},
		{"wrapped once", 30000, 500, 32768, 3300, true, []int{30001, 32767, 300, 500}, []int{30000, 501, 20000}},
		{"maybe round the whole space", 1000, 1003, 32768, 32468, true, []int{5, 999, 1000, 20000}, nil},
		{"fork count unknown", 1000, 1003, 32768, 0, false, []int{5, 999, 20000}, nil},
	} {
		since, few := pidWindow(tt.sid, tt.last, tt.pidMax, tt.moved, tt.known)
		has := func(p int) bool {
			if since != nil {
				return since(p)
			}
			return slices.Contains(few, p)
		}
		for _, p := range tt.in {
			if !has(p) {
				t.Errorf("%s: pid %d left out", tt.name, p)
			}
		}
		for _, p := range tt.out {
			if has(p) {
				t.Errorf("%s: pid %d looked at", tt.name, p)
			}
		}
	}
}

// TestPidMoved: how far the pid allocator can have moved since a reading
// taken before the leader's start counts the tasks of that reading, not of
// now. Numbers in use at the start are skipped by the allocator even when
// their tasks are gone by the end: 30,000 tasks at the start that ended
// during the order, and 100 forks, can take the allocator round a pid
// space of 32,768 (which then leaves the session's members anywhere in
// it), while a count of the tasks left at the end (10) says 130 pids.
func TestPidMoved(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		before    pidReading
		forks     uint64
		moved     uint64
		known     bool
		wholeFrom int // pid_max from which the window is not every pid; 0: none
	}{
		{"the start's tasks", pidReading{forks: 1000, tasks: 30000}, 1100, 100 + 90000, true, 90401},
		{"a quiet host", pidReading{forks: 1000, tasks: 300}, 1010, 10 + 900, true, 1211},
		{"fork count backwards", pidReading{forks: 1000, tasks: 300}, 900, 900, false, 0},
	} {
		moved, known := pidMoved(tt.before, tt.forks)
		if moved != tt.moved || known != tt.known {
			t.Errorf("%s: moved %d known %v, want %d %v", tt.name, moved, known, tt.moved, tt.known)
		}
		// The leader 1000 and a last pid 1003: a member below the
		// leader (wrapped round) must be looked at when the
		// allocator can have gone round.
		for _, pidMax := range []int{32768, 4194304} {
			since, _ := pidWindow(1000, 1003, pidMax, moved, known)
			whole := since != nil && since(5)
			if want := tt.wholeFrom == 0 || pidMax < tt.wholeFrom; whole != want {
				t.Errorf("%s: pid_max %d: every pid looked at = %v, want %v", tt.name, pidMax, whole, want)
			}
		}
	}
}

// TestRunSlowOutputConsumerIsNoEscape: when the order's processes are
// gone but OnOutput is still busy with their output, what is left in the
// pipes is theirs: it is read in full, and nobody escaped.
func TestRunSlowOutputConsumerIsNoEscape(t *testing.T) {
	t.Parallel()
	req := sh("echo first; sleep 0.2; echo second")
	var once sync.Once
	req.OnOutput = func(stream string, p []byte) {
		once.Do(func() { time.Sleep(pipeDrainDelay + time.Second) })
	}
	res := newTestExecutor(t).Run(t.Context(), req, nil)
	if exitCode(t, res) != 0 {
		t.Fatal("sh failed")
	}
	if got := string(res.Stdout.Content); got != "first\nsecond\n" {
		t.Errorf("stdout = %q: the order's own output was cut", got)
	}
	if res.Escaped || res.Verified != VerifiedGroup {
		t.Errorf("Escaped=%v Verified=%q, want false and group", res.Escaped, res.Verified)
	}
}

// TestRunTermReachesEveryGroupOfTheOrder: the graceful step of a timeout or
// a cancel (SIGTERM, then kill_grace) reaches every process of the order,
// not only the leader's group: a process that moved to a group of its own
// (setpgid) gets the SIGTERM, and its handler runs, before the SIGKILL of
// the order's end; in an order cgroup, so does one that left the session
// (setsid). The leader waits, on SIGTERM, until the moved process has seen
// it; without the signal it waits for the grace's SIGKILL.
func TestRunTermReachesEveryGroupOfTheOrder(t *testing.T) {
	t.Parallel()
	for _, cgroup := range []bool{false, true} {
		for _, tt := range []struct{ name, leave string }{
			{"setpgid", "setpgrp(0, 0)"},
			{"setsid", "POSIX::setsid()"},
		} {
			for _, how := range []string{"timeout", "cancel"} {
				name := tt.name + "/" + how
				if cgroup {
					name = "cgroup/" + name
				} else if tt.name == "setsid" {
					continue // it leaves the session: only a cgroup holds it
				}
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					dir := t.TempDir()
					// The moved process writes $1/ready once it has
					// left, and $1/term when SIGTERM comes.
					script := `perl -MPOSIX -e '$SIG{TERM} = sub { open my $f, ">", "$ARGV[0]/term"; exit 0 }; ` + tt.leave + `;
						open my $f, ">", "$ARGV[0]/ready"; close $f; sleep 100 while 1' "$1" </dev/null >/dev/null 2>&1 &
					until [ -e "$1/ready" ]; do sleep 0.01; done
					trap 'until [ -e "$1/term" ]; do sleep 0.05; done; exit 0' TERM
					echo ready
					while :; do sleep 0.05; done`
					signals := make(chan syscall.Signal, 1)
					req := startedScript(script, func() {
						if how == "cancel" {
							signals <- syscall.SIGTERM
						}
					})
					req.Argv = append(req.Argv, "sh", dir)
					if how == "timeout" {
						req.Timeout = 4 * time.Second // time for a starved shell and perl to get ready
					}
					req.KillGrace = 5 * time.Second
					if cgroup {
						req.CgroupParent = testCgroupParent(t)
						req.CgroupName = "order-term"
					}
					res := newTestExecutor(t).Run(t.Context(), req, signals)
					if how == "timeout" && !res.TimedOut || how == "cancel" && !res.Canceled {
						t.Fatalf("TimedOut=%v Canceled=%v", res.TimedOut, res.Canceled)
					}
					if _, err := os.Stat(filepath.Join(dir, "term")); err != nil {
						t.Errorf("the process that left the leader's group saw no SIGTERM: %v", err)
					}
					if res.ExitCode == nil || *res.ExitCode != 0 {
						t.Errorf("ExitCode=%v Signal=%q: the leader did not end by its trap (stderr %q)", res.ExitCode, res.Signal, res.Stderr.Content)
					}
					if res.Duration >= req.Timeout+req.KillGrace {
						t.Errorf("Duration = %v: the order waited for the grace", res.Duration)
					}
					if !res.GroupGone || res.Verified == "" {
						t.Errorf("GroupGone=%v Verified=%q", res.GroupGone, res.Verified)
					}
				})
			}
		}
	}
}

// TestRunLeaderThatWillNotDieEndsTheOrder: a leader that outlives its
// SIGKILL (uninterruptible sleep: a hard NFS mount whose server is gone)
// held Run, and so the host's queue, for as long as it slept, past the
// order's timeout and grace. Run now gives it leaderGoneTimeout, then
// ends the order unverified without it, and reaps it once it dies. The
// leader here dies at once, but its exit is kept from Run until the test
// lets it through.
func TestRunLeaderThatWillNotDieEndsTheOrder(t *testing.T) {
	t.Parallel()
	req := sh("exec sleep 100")
	req.Timeout, req.KillGrace = 100*time.Millisecond, 100*time.Millisecond
	runStuckLeader(t, req, func(res Result) {
		if !res.TimedOut || res.GroupGone || res.Verified != "" || res.Escaped {
			t.Errorf("TimedOut=%v GroupGone=%v Verified=%q Escaped=%v, want true false \"\" false", res.TimedOut, res.GroupGone, res.Verified, res.Escaped)
		}
	})
}

// TestRunRefusedLeaderThatWillNotDieEndsTheOrder: a leader refused at its
// start (OnStart failed: the worker lost the host, or could not record the
// process) is SIGKILLed, and Run then waited for it without a bound: one
// in uninterruptible sleep held the host's queue for as long as it slept.
// It now gets leaderGoneTimeout, as after a timeout's grace.
func TestRunRefusedLeaderThatWillNotDieEndsTheOrder(t *testing.T) {
	t.Parallel()
	req := sh("exec sleep 100")
	req.OnStart = func(Process, bool) error { return errors.New("not this worker's host any more") }
	runStuckLeader(t, req, func(res Result) {
		if res.Aborted == nil || res.GroupGone || res.Verified != "" {
			t.Errorf("Aborted=%v GroupGone=%v Verified=%q, want an error, false, \"\"", res.Aborted, res.GroupGone, res.Verified)
		}
	})
}

// runStuckLeader runs req with its leader's exit kept from Run until the
// test lets it through (the leader dies at once, as one in uninterruptible
// sleep would not): Run must end within leaderGoneTimeout of its SIGKILL,
// knowing nothing of how the leader ended (check judges the rest), and
// reap the leader once it is seen to exit, as /proc shows from outside.
func runStuckLeader(t *testing.T, req Request, check func(Result)) {
	t.Helper()
	e := newTestExecutor(t)
	release := make(chan struct{})
	e.leaderExited = func(pid int) error {
		<-release
		return waitExitedNoReap(pid)
	}
	done := make(chan Result, 1)
	go func() { done <- e.Run(t.Context(), req, nil) }()
	var res Result
	select {
	case res = <-done:
	case <-time.After(leaderGoneTimeout + 20*time.Second):
		close(release)
		<-done
		t.Fatalf("Run still waits for a leader that does not die, %v after its SIGKILL", leaderGoneTimeout+20*time.Second)
	}
	check(res)
	if res.ExitCode != nil || res.Signal != "" {
		t.Errorf("ExitCode=%v Signal=%q: nothing is known of how the leader ended", res.ExitCode, res.Signal)
	}
	close(release)
	stat := "/proc/" + strconv.Itoa(res.Pid) + "/stat"
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(stat); errors.Is(err, fs.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the leader %d was never reaped", res.Pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
