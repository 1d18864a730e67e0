package executor

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestRunRecordsALeaderThatWouldOutliveTheWorker: a leader alone in its
// session and runnable is given up to AloneWait before OnStart (its
// record), on the ground that it dies with the worker (Pdeathsig). The
// kernel clears that signal when the leader changes its effective user
// (a command that drops root: perl's `$> = 65534` here) or executes a
// set-user-ID file; such a leader, kept waiting, outlived a worker killed
// within the wait with no record for a successor to find it by. It is
// handed to OnStart at the next look instead, running. AloneWait is long
// here (30 s): the wait for OnStart is the test's only bound.
func TestRunRecordsALeaderThatWouldOutliveTheWorker(t *testing.T) {
	const recordWaitOfTheWorker = 10 * time.Millisecond // worker.recordWait
	needRoot(t)
	perl, err := os.ReadFile("/usr/bin/perl")
	if err != nil {
		t.Fatalf("the test's leaders are perl: %v", err)
	}
	// A set-user-ID root copy, which nobody may run: perl takes no -e
	// so, a script file it does.
	dir, err := os.MkdirTemp("", "orderly-suid-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	suid, script := filepath.Join(dir, "perl"), filepath.Join(dir, "spin.pl")
	if err := os.WriteFile(suid, perl, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(script, []byte("1 while 1;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(suid, 0o4755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dropsRoot := baseRequest("/usr/bin/perl", "-e", "$> = 65534; 1 while 1")
	setUID := baseRequest(suid, script)
	setUID.Credential = &syscall.Credential{Uid: 65534, Gid: 65534}
	for name, req := range map[string]Request{"drops root": dropsRoot, "set-user-ID executable": setUID} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			recorded := make(chan bool, 1)
			req.ExitWait, req.AloneWait = recordWaitOfTheWorker, 30*time.Second
			req.OnStart = func(_ Process, exited bool) error {
				recorded <- exited
				return nil
			}
			done := make(chan Result, 1)
			go func() { done <- newTestExecutor(t).Run(ctx, req, nil) }()
			select {
			case exited := <-recorded:
				if exited {
					t.Errorf("OnStart saw the spinning leader exited")
				}
			case <-time.After(15 * time.Second):
				t.Errorf("no record within 15 s of a leader that the worker's death would not end")
			}
			cancel()
			res := <-done
			assertGroupGone(t, res)
		})
	}
}

// TestIdsAreReadsTheEffectiveAndFileSystemIDs: the status line's second
// and fourth fields are compared, whatever the real and saved IDs are.
func TestIdsAreReadsTheEffectiveAndFileSystemIDs(t *testing.T) {
	status := []byte("Name:\tperl\nUid:\t65534\t0\t0\t0\nGid:\t65534\t65534\t65534\t65534\n")
	for _, tt := range []struct {
		key  string
		id   uint64
		want bool
	}{
		{"Uid:", 0, true},
		{"Uid:", 65534, false},
		{"Gid:", 65534, true},
		{"Gid:", 0, false},
		{"Groups:", 0, false},
	} {
		if got := idsAre(status, tt.key, tt.id); got != tt.want {
			t.Errorf("idsAre(%s %d) = %v, want %v", tt.key, tt.id, got, tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { idsAre(status, "Gid:", 65534) }); n != 0 {
		t.Errorf("idsAre allocated %v times a call, want none", n)
	}
}
