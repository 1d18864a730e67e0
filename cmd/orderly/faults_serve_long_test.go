package main

// A long order with its watchers on `orderly serve` while serve fails
// under it (hD15): hE14's TestFaultsLongOrderWatchers runs the split
// stack; serve's worker, API, embedded NATS and managed PostgreSQL are
// one process and its child, and fail together.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/api/client"
)

// escapingScript is longScript with a process that leaves the order's
// session (setsid, its own output closed) and sleeps under the order's
// tag: only the order's cgroup still holds it.
const escapingScript = `setsid sh -c 'sleep 300; :' "$4" </dev/null >/dev/null 2>&1 &
` + longScript

// cgroupOfProcess returns the directory of pid's cgroup on the unified
// hierarchy (cgroup v2: /sys/fs/cgroup, or /sys/fs/cgroup/unified on a
// hybrid host), or "".
func cgroupOfProcess(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return ""
	}
	for line := range strings.Lines(string(b)) {
		if rel, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok {
			for _, mount := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
				if _, err := os.Stat(filepath.Join(mount, rel, "cgroup.procs")); err == nil {
					return filepath.Join(mount, rel)
				}
			}
		}
	}
	return ""
}

// cgroupLeft reports what is left of an order's cgroup directory: "" when
// it is gone, else what is in it.
func cgroupLeft(dir string) string {
	procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			return ""
		}
	}
	return fmt.Sprintf("directory %s left, processes %q (%v)", dir, strings.Fields(string(procs)), err)
}

// TestFaultsServeLongOrder runs a long order (30 s of output, a process
// of it escaped from its session) on `orderly serve` with its watchers
// attached (the CLI's follow, a poller, a NATS subscriber with the API's
// credential), then fails serve under it: SIGKILL and a start on the
// same data dir (the order is the killed worker's: interrupted, with its
// reason, by the new serve's takeover); its managed PostgreSQL's
// postmaster SIGKILLed (serve starts it again and the order goes on:
// succeeded); SIGTERM with the order running and a start again (killed,
// its error saying the worker stopped, config.md's worker.shutdown_grace).
// Checked from outside: the order ran once, no process of it is left,
// its cgroup directory is gone, the watchers end with its status.
func TestFaultsServeLongOrder(t *testing.T) {
	needOrderCgroups(t)
	for _, tc := range []struct {
		name string
		want client.Status
		// outputLost: the order keeps none of its output (its live
		// stream was in the killed serve's embedded NATS, in memory:
		// sql.md, decisions.md); what the follow wrote is still what
		// the order printed.
		outputLost bool
		// inject fails serve; it returns the serve that runs afterwards.
		inject func(t *testing.T, s *serveFaults) *faultProc
	}{
		{"serve_kill9", client.StatusInterrupted, true, func(t *testing.T, s *serveFaults) *faultProc {
			s.sv.signal(syscall.SIGKILL)
			s.sv.waitExit(10 * time.Second)
			pause(t.Context(), time.Second)
			return s.start(t)
		}},
		{"postgres_kill9", client.StatusSucceeded, false, func(t *testing.T, s *serveFaults) *faultProc {
			pid := s.postmaster(t)
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, 60*time.Second, "serve to start its PostgreSQL again", func() bool {
				p, err := s.postmasterPID()
				return err == nil && p != pid && aliveProcess(p)
			})
			return s.sv
		}},
		// Stopped with its PostgreSQL just killed: the worker still ends
		// the order at its stop, and its result waits for PostgreSQL's
		// restart (serve supervises it until the worker stopped) or is
		// given up 5 s after the stop, for the next serve's takeover.
		{"postgres_kill9_then_stop", client.StatusKilled, false, func(t *testing.T, s *serveFaults) *faultProc {
			if err := syscall.Kill(s.postmaster(t), syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			s.sv.signal(syscall.SIGTERM)
			if !s.sv.waitExit(60 * time.Second) {
				t.Fatalf("serve did not stop within 60 s of SIGTERM")
			}
			return s.start(t)
		}},
		{"serve_stop", client.StatusKilled, false, func(t *testing.T, s *serveFaults) *faultProc {
			s.sv.signal(syscall.SIGTERM)
			if !s.sv.waitExit(60 * time.Second) {
				t.Fatalf("serve did not stop within 60 s of SIGTERM")
			}
			return s.start(t)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runServeLongOrder(t, tc.want, tc.outputLost, tc.inject)
		})
	}
}

// serveFaults is one `orderly serve` data dir, started on fixed ports so
// that clients find it again after a restart.
type serveFaults struct {
	*faultStack
	dataDir string
	env     []string
	sv      *faultProc
	serves  int
}

func newServeFaults(t *testing.T) *serveFaults {
	// serve's postmaster is daemonized by pg_ctl: orphaned, it goes to the
	// nearest subreaper above it. A test binary that an in-process serve
	// or worker left one would be handed it and never reap it: a
	// postmaster these tests kill stayed a zombie, its pid held, and
	// every start of the cluster was refused. An adopting worker clears
	// the flag at its stop now; one found set is a test's that did not.
	requireNoSubreaper(t, "as a serve fault test starts")
	dataDir := serveDataDir(t, "osl-")
	dir := shortDir(t, "osl-logs-", os.Getenv("ORDERLY_FAULTS_KEEP") != "")
	apiPort, natsPort := freePort(t), freePort(t)
	s := &serveFaults{faultStack: &faultStack{t: t, dir: dir, apiURL: fmt.Sprintf("http://127.0.0.1:%d", apiPort),
		natsURL: fmt.Sprintf("nats://127.0.0.1:%d", natsPort)}, dataDir: dataDir}
	t.Cleanup(s.dumpLogsOnFailure)
	s.env = []string{"PATH=/usr/bin:/bin", "HOME=" + dataDir, fmt.Sprintf("ORDERLY_NATS__LISTEN=127.0.0.1:%d", natsPort),
		"ORDERLY_NATS__LEASE_TTL=2s", "ORDERLY_NATS__HEARTBEAT=300ms", "ORDERLY_WORKER__KILL_GRACE=500ms",
		"ORDERLY_WORKER__SHUTDOWN_GRACE=3s"}
	s.sv = s.start(t)
	tok, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	s.token = strings.TrimSpace(string(tok))
	return s
}

func (s *serveFaults) start(t *testing.T) *faultProc {
	s.serves++
	name := fmt.Sprintf("serve-%d", s.serves)
	p := startFaultProc(t, name, filepath.Join(s.dir, name+".log"), s.env, orderlyBin, "serve", "--data-dir", s.dataDir,
		"--listen", strings.TrimPrefix(s.apiURL, "http://"), "--host", "srv")
	waitHTTPOK(t, s.apiURL+"/readyz", 120*time.Second, p)
	s.sv = p
	return p
}

// postmasterPID reads the managed cluster's postmaster.pid.
func (s *serveFaults) postmasterPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(s.dataDir, "pg", "data", "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(line))
}

func (s *serveFaults) postmaster(t *testing.T) int {
	t.Helper()
	pid, err := s.postmasterPID()
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func runServeLongOrder(t *testing.T, want client.Status, outputLost bool, inject func(t *testing.T, s *serveFaults) *faultProc) {
	const ticks, every, block = 150, "0.2", 7000
	s := newServeFaults(t)
	c, err := client.New(s.apiURL, s.token)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	tag := runTag("slong", t)
	marker := filepath.Join(s.dir, "marker-long")
	sub, err := c.Submit(ctx, client.SubmitRequest{Host: "srv", Command: "sh", TimeoutSeconds: 180,
		Args: []string{"-c", startedScript(escapingScript), "_", fmt.Sprint(ticks), every, fmt.Sprint(block), tag, "0", marker},
		Env:  map[string]string{faultOrderEnv: tag}}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id := sub.Order.ID.String()
	nk, err := nats.NkeyOptionFromSeed(filepath.Join(s.dataDir, "nats-creds", "api.nk"))
	if err != nil {
		t.Fatal(err)
	}
	ws := watchLong(t, ctx, c, s.natsURL, "srv", id, nk)
	waitUntil(t, 60*time.Second, "the follow to read 200 KB", func() bool {
		ws.mu.Lock()
		defer ws.mu.Unlock()
		return ws.stdout.Len() > 200<<10
	})
	requireEnvTagged(t, tag)
	// The order's cgroup, seen from outside: its escaped process's.
	pids := procsWithArgs(tag)
	if len(pids) < 2 {
		t.Fatalf("the order's processes carrying its tag %s: %v, want its shell and its escapee", tag, pids)
	}
	cgroup := cgroupOfProcess(pids[0])
	if filepath.Base(cgroup) != "order-"+id {
		t.Fatalf("the order's process %d is in cgroup %q, not one of its own (order-%s)", pids[0], cgroup, id)
	}
	s.note("inject")
	stopped := s.sv
	inject(t, s)
	s.note("injected")
	if want == client.StatusKilled && stopped != s.sv && stopped.logged("write result; given up") {
		// The other outcome the stop documents (config.md's
		// worker.shutdown_grace, deploy.md): PostgreSQL was not back,
		// or not yet retried, within the stop's write window, so the
		// result is left to the next serve's takeover, which finds the
		// order interrupted and its output gone with the stopped serve's
		// in-memory live stream. On a loaded machine the postmaster's
		// restart alone took longer than the window (5.4 s, 2026-12-06).
		t.Logf("%s gave up the result write at its stop: the order is the next serve's to end", stopped.name)
		want, outputLost = client.StatusInterrupted, true
	}
	o := ws.endedOnce(t, ctx, c, id, tag, marker, want)
	if left := cgroupLeft(cgroup); left != "" {
		t.Errorf("the order's cgroup after its end: %s", left)
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if rec, _ := o.Processes["cgroup"].(string); rec != "" && rec != cgroup {
		t.Errorf("the order's recorded cgroup %s, its processes ran in %s", rec, cgroup)
	}
	t.Logf("order %s, kept %d+%d bytes (truncated %t), processes %v; follow: %d+%d bytes, missed %v, statuses %v, err %v; poll errors %d (answers %v); finished events %v",
		o.Status, resultBytes(o, "stdout"), resultBytes(o, "stderr"), o.Result != nil && o.Result.Stdout.Truncated, o.Processes, ws.stdout.Len(), ws.stderr.Len(), ws.missed, ws.statuses, ws.followErr, ws.pollErrs, ws.pollCodes, ws.finished)
	for code := range ws.pollCodes {
		if code >= 500 && code != http.StatusServiceUnavailable {
			t.Errorf("the poller was answered %d while serve failed (answers %v), first: %s", code, ws.pollCodes, ws.pollFirst[code])
		}
	}
	ws.sawTheEnd(t, o)
	full, fullErr := longOutput(ticks, block)
	if !outputLost {
		checkLongOutput(t, o, ws, full, fullErr, want)
		return
	}
	if o.Result == nil || o.Result.Stdout.Bytes != 0 || o.Result.Stderr.Bytes != 0 {
		t.Errorf("the killed serve's order kept output: %+v; the live stream is gone with its NATS (update sql.md)", o.Result)
	}
	if !bytes.HasPrefix(full, ws.stdout.Bytes()) || !bytes.HasPrefix(fullErr, ws.stderr.Bytes()) {
		t.Errorf("the follow wrote %d+%d bytes that are not a prefix of what was printed", ws.stdout.Len(), ws.stderr.Len())
	}
}

// TestFaultsWorkerKilledOrderCgroup: a split `orderly worker` is SIGKILLed
// while a long order runs with children (its shell, the loop's sleeps,
// a process escaped from its session), and its successor takes the host
// over: a worker started after the kill (restart), or a standby that
// waited beside it (standby). Checked from outside: the order ends
// interrupted with its reason, verified by its cgroup, no process of it
// is left, and its cgroup directory, found from its processes' own
// /proc/<pid>/cgroup while it ran, is gone.
func TestFaultsWorkerKilledOrderCgroup(t *testing.T) {
	needOrderCgroups(t)
	for _, standby := range []bool{false, true} {
		t.Run(map[bool]string{false: "restart", true: "standby"}[standby], func(t *testing.T) {
			s := newFaultStack(t)
			w := s.startWorker("h1")
			waitLogLine(t, w.faultProc, "worker consuming", time.Minute)
			if standby {
				s.startWorker("h1")
			}
			c, err := client.New(s.apiURL, s.token)
			if err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			tag := runTag("cgkill", t)
			sub, err := c.Submit(ctx, client.SubmitRequest{Host: "h1", Command: "sh", TimeoutSeconds: 180,
				Args: []string{"-c", escapingScript, "_", "300", "0.2", "100", tag, "0"},
				Env:  map[string]string{faultOrderEnv: tag}}, client.SubmitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			id := sub.Order.ID.String()
			var pids []int
			waitUntil(t, time.Minute, "the order's shell and its escapee", func() bool {
				pids = procsWithArgs(tag)
				return len(pids) >= 2
			})
			requireEnvTagged(t, tag)
			cgroup := cgroupOfProcess(pids[0])
			if filepath.Base(cgroup) != "order-"+id {
				t.Fatalf("the order's process %d is in cgroup %q, not one of its own (order-%s)", pids[0], cgroup, id)
			}
			pause(ctx, time.Second)
			s.note("kill -9 the worker")
			w.signal(syscall.SIGKILL)
			w.waitExit(10 * time.Second)
			if left := cgroupLeft(cgroup); left == "" {
				t.Fatalf("the order's cgroup went with its worker: nothing left for the successor")
			}
			if !standby {
				s.startWorker("h1")
			}
			var o *client.Order
			waitUntil(t, 2*time.Minute, "the order to end", func() bool {
				o, err = c.Get(ctx, id)
				return err == nil && o.Status.Terminal() && o.Processes != nil
			})
			if o.Status != client.StatusInterrupted || o.Result == nil || o.Result.Error == nil || *o.Result.Error == "" {
				t.Errorf("status %s, result %+v: want interrupted with its reason", o.Status, o.Result)
			}
			if o.Processes["verified"] != "cgroup" {
				t.Errorf("processes %v: want the end verified by the order's cgroup", o.Processes)
			}
			if pids := orderProcs(tag); len(pids) > 0 {
				t.Errorf("processes of the order left after it ended: %v", pids)
			}
			if left := cgroupLeft(cgroup); left != "" {
				t.Errorf("the order's cgroup after its end: %s", left)
			}
		})
	}
}

// resultBytes is the byte count of the order's kept stream, -1 without a
// result.
func resultBytes(o *client.Order, stream string) int64 {
	switch {
	case o.Result == nil:
		return -1
	case stream == "stderr":
		return o.Result.Stderr.Bytes
	}
	return o.Result.Stdout.Bytes
}
