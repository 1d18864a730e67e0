package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// watchdogScript waits for its stdin to reach end of file, which happens
// when the test binary dies without running Main's cleanup (a panic, a -timeout,
// a kill), and then stops the postmaster ($1, immediate shutdown) and removes
// the cluster directory ($2). It gives the postmaster 10 seconds to exit.
const watchdogScript = `read -r _
kill -QUIT "$1" 2>/dev/null
i=0
while kill -0 "$1" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done
rm -rf -- "$2"
`

// startWatchdog makes sure the cluster in dir does not outlive the test
// binary, which would otherwise leave one postgres per crashed test run.
// The returned function disarms it after a normal shutdown.
func startWatchdog(dir string) (func(), error) {
	b, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
	if err != nil {
		return nil, fmt.Errorf("watchdog: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return nil, fmt.Errorf("watchdog: postmaster pid %q: %w", line, err)
	}
	cmd := exec.Command("/bin/sh", "-c", watchdogScript, "testenv-watchdog", strconv.Itoa(pid), dir)
	// Its own process group keeps a terminal's ^C from killing it before
	// it has cleaned up. Stdout and stderr stay closed: an inherited pipe
	// would keep `go test` waiting for the watchdog.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("watchdog: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("watchdog: %w", err)
	}
	return func() {
		// Killed, not released: the cluster is already stopped and removed
		// (or kept for inspection after a failed stop).
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		_ = stdin.Close()
	}, nil
}
