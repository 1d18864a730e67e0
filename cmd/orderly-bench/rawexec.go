package main

import (
	"fmt"
	"io"
	"os/exec"
	"syscall"
	"time"
)

func rawExecRate(n int, workerLike bool) (float64, error) {
	start := time.Now()
	for i := 0; i < n; i++ {
		cmd := exec.Command("/bin/true")
		if workerLike {
			cmd.Env = []string{}
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
			cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		}
		if err := cmd.Run(); err != nil {
			return 0, fmt.Errorf("raw exec of /bin/true: %w", err)
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
