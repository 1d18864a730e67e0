package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
)

// children are the orderly processes a load starts next to serve (extra
// workers, API replicas), each in its own process group; stop ends them.
type children struct {
	cmds []*exec.Cmd
	wg   sync.WaitGroup
}

// start starts cmd, passes each line of its stderr to onLine (may be nil)
// and echoes its warnings and errors to ours, prefixed with name.
func (ch *children) start(cmd *exec.Cmd, name string, onLine func(string)) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	ch.cmds = append(ch.cmds, cmd)
	ch.wg.Add(1)
	go func() {
		defer ch.wg.Done()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := sc.Text()
			if onLine != nil {
				onLine(line)
			}
			if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
				fmt.Fprintf(os.Stderr, "  %s| %s\n", name, line)
			}
		}
		_ = cmd.Wait()
	}()
	return nil
}

// stop sends SIGTERM to every child and waits until they are gone.
func (ch *children) stop() {
	for _, c := range ch.cmds {
		_ = c.Process.Signal(syscall.SIGTERM)
	}
	ch.wg.Wait()
}

// pids are the children's process ids, in start order.
func (ch *children) pids() []int {
	out := make([]int, len(ch.cmds))
	for i, c := range ch.cmds {
		out[i] = c.Process.Pid
	}
	return out
}
