package executor

import (
	"fmt"
	"os"
)

// Self identifies the calling process: a worker records it as the host's
// owner, so that a successor can tell from PostgreSQL which process it
// replaces and whether that very process still lives.
func Self() (Process, error) {
	pid := os.Getpid()
	boot, err := readBootID()
	if err != nil {
		return Process{PID: pid}, err
	}
	st, err := readStat(pid)
	if err != nil {
		return Process{PID: pid, BootID: boot}, fmt.Errorf("identify this process: %w", err)
	}
	return Process{PID: pid, PGID: st.pgrp, StartTime: st.startTime, BootID: boot}, nil
}
