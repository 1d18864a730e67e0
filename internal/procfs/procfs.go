// Package procfs reads the few fields of /proc/<pid>/stat that the
// server's housekeeping and the bench need: a process's state, parent
// and CPU times, and the children of a process.
//
// It is not for an order's path: it allocates. The executor keeps its
// own allocation-free reader (worker/executor, readStat).
package procfs

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Fields returns the fields of /proc/<pid>/stat after the command name:
// [0] the state, [1] the parent's pid, [11] utime, [12] stime, [13]
// cutime, [14] cstime (proc(5)'s fields 3 onward). It returns nil when
// the process is gone or the file has fewer fields than that.
func Fields(pid int) []string { return FieldsOf(fmt.Sprintf("/proc/%d/stat", pid)) }

// FieldsOf is Fields of the stat file at path: a thread's
// (/proc/<pid>/task/<tid>/stat), for one.
func FieldsOf(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return parse(string(b))
}

// parse splits a stat line after its command name, which may itself hold
// spaces and parentheses: fields are counted from the last ')'.
func parse(stat string) []string {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return nil
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 15 {
		return nil
	}
	return f
}

// Children returns the pids of the processes whose parent is ppid, as
// /proc lists them now.
func Children(ppid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	parent := strconv.Itoa(ppid)
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := Fields(pid); f != nil && f[1] == parent {
			out = append(out, pid)
		}
	}
	return out
}
