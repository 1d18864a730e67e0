package executor

import (
	"context"
	"errors"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestAwaitGone: AwaitGone returns once a process it waits for is
// killed, on a pidfd or reading /proc every check (pollGone), and not
// while the process is frozen (SIGSTOP: alive); a record of another boot,
// which it cannot judge, is waited for until ctx ends, killed or not.
func TestAwaitGone(t *testing.T) {
	for _, tc := range []struct {
		name   string
		await  func(ctx context.Context, p Process, check time.Duration) error
		freeze bool
		boot   string // "" for this one
	}{
		{"killed", AwaitGone, false, ""},
		{"killed, on its pidfd only", onPidfd, false, ""},
		{"killed, read every check", pollGone, false, ""},
		{"frozen, then killed, on its pidfd only", onPidfd, true, ""},
		{"frozen, then killed", AwaitGone, true, ""},
		{"frozen, then killed, read every check", pollGone, true, ""},
		{"another boot", AwaitGone, false, "another-boot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("sleep", "600")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			go func() { _ = cmd.Wait(); close(exited) }()
			t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
			self, err := Self()
			if err != nil {
				t.Fatal(err)
			}
			st, err := readStat(cmd.Process.Pid)
			if err != nil {
				t.Fatal(err)
			}
			p := Process{PID: cmd.Process.Pid, StartTime: st.startTime, BootID: self.BootID, PidNS: self.PidNS}
			if tc.boot != "" {
				p.BootID = tc.boot
			}
			if tc.freeze {
				if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- tc.await(ctx, p, 20*time.Millisecond) }()
			// Ten checks of /proc, at least, with the process alive.
			select {
			case err := <-done:
				t.Fatalf("returned %v while the process lives", err)
			case <-time.After(200 * time.Millisecond):
			}
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			<-exited
			killed := time.Now()
			want := error(nil)
			if tc.boot != "" {
				select {
				case err := <-done:
					t.Fatalf("returned %v for a process of another boot", err)
				case <-time.After(200 * time.Millisecond):
				}
				cancel()
				want = context.Canceled
			}
			select {
			case err := <-done:
				if !errors.Is(err, want) {
					t.Fatalf("returned %v, want %v", err, want)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("did not return within 20 s of the kill")
			}
			t.Logf("returned %s after the kill", time.Since(killed).Round(time.Millisecond))
		})
	}
}

// onPidfd is AwaitGone on a pidfd only: errNoPidfd when it cannot.
func onPidfd(ctx context.Context, p Process, _ time.Duration) error { return awaitPidfd(ctx, p) }
