package main

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCLIStoppedBySignalExitsAsTheShellSays: a client command waiting for
// an order exits 128 + the number of the signal that stopped it, as the
// shell reports a command a signal ended: Ctrl-C (SIGINT) 130, SIGTERM
// 143. SIGTERM exited 130, so a supervisor's stop read as a Ctrl-C.
func TestCLIStoppedBySignalExitsAsTheShellSays(t *testing.T) {
	s := newStack(t) // no worker: the order stays queued
	for _, tc := range []struct {
		sig  syscall.Signal
		exit int
	}{{syscall.SIGINT, 130}, {syscall.SIGTERM, 143}} {
		marker := "stopped-by-" + strings.ToLower(tc.sig.String())
		ctx, stop := signalContext(t.Context())
		var out strings.Builder
		var errb lockedBuffer
		go func() {
			// Into the wait: the API answered the submission, and the
			// command says the order waits for a worker (after
			// noWorkerCheckAfter). Sent 200 ms after the order's row
			// showed, the signal could come before a loaded API had
			// answered: "stopped before the API answered".
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				if strings.Contains(errb.String(), "has no worker online") {
					break
				}
			}
			_ = syscall.Kill(os.Getpid(), tc.sig)
		}()
		err := run(ctx, []string{"orderly", "submit", "--host", "ghost", "--wait", "--", "echo", marker}, s.cliEnv(),
			strings.NewReader(""), &out, &errb)
		stop()
		r := cliResult{out.String(), errb.String(), err}
		wantExit(t, r, tc.exit)
		if !strings.Contains(r.stderr, "stopped waiting") {
			t.Errorf("%s: stderr %q, want it to say waiting stopped and the order goes on", tc.sig, r.stderr)
		}
	}
}
