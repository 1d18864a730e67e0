package executor

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// An order's leader killed by SIGKILL that the worker did not send (no
// timeout, cancel or refused start) was most often ended by the kernel's
// OOM killer: the order, or the machine, out of memory. The wait status
// says only SIGKILL, so the worker looks at the kernel's counts of OOM
// kills it can see: the memory cgroups the order is charged to (the
// order cgroup's parent on cgroup v2, whose memory.events counts its
// children's kills too; the worker's own memory cgroup, v1 or v2) and the
// machine's (/proc/vmstat). They are read once before the first order
// and again only after such a SIGKILL, not around every order (the
// machine's file costs ~35 µs a read): a rise since the last look, which
// the result dates, points at the OOM killer.

// oomReading is one look at the OOM kill counts.
type oomReading struct {
	at     time.Time
	global uint64   // /proc/vmstat oom_kill
	counts []uint64 // one per oomSources.files
}

// oomSource is a memory cgroup whose OOM kills are counted in file (its
// memory.events, or v1's memory.oom_control), and its limit's file.
type oomSource struct {
	dir, file, limit string
}

// oomSources lists the memory cgroups an order of the worker is charged
// to, for parent (the order cgroups' parent, "" without one).
func oomSources(parent string) []oomSource {
	var srcs []oomSource
	add := func(dir string) {
		for _, s := range []oomSource{{dir, "memory.events", "memory.max"}, {dir, "memory.oom_control", "memory.limit_in_bytes"}} {
			if _, err := os.Stat(filepath.Join(dir, s.file)); err == nil {
				srcs = append(srcs, s)
				return
			}
		}
	}
	if parent != "" {
		add(parent)
	}
	self, err1 := os.ReadFile("/proc/self/cgroup")
	mounts, err2 := os.ReadFile("/proc/self/mountinfo")
	if err1 == nil && err2 == nil {
		if dir, _ := controllerDir("memory", self, mounts); dir != "" && dir != parent {
			add(dir)
		}
	}
	return srcs
}

// readOOM reads the counts of srcs and of the machine.
func readOOM(srcs []oomSource) *oomReading {
	r := &oomReading{at: time.Now(), global: oomKillIn("/proc/vmstat"), counts: make([]uint64, len(srcs))}
	for i, s := range srcs {
		r.counts[i] = oomKillIn(filepath.Join(s.dir, s.file))
	}
	return r
}

// oomKillIn is the value of the "oom_kill" line of a counter file, 0 when
// it has none.
func oomKillIn(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "oom_kill "); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// oomKilled says, for a leader killed by a SIGKILL the worker did not
// send, whether OOM kills were counted since the last look (""
// when none were), and takes the new look as the next one's base.
func (e *Executor) oomKilled(parent string) string {
	srcs := oomSources(parent)
	now := readOOM(srcs)
	before := e.oomSeen.Swap(now)
	if before == nil || len(before.counts) != len(now.counts) {
		return ""
	}
	since := before.at.UTC().Format(time.RFC3339)
	for i, s := range srcs {
		if n := now.counts[i] - before.counts[i]; now.counts[i] > before.counts[i] {
			limit := readFirstField(filepath.Join(s.dir, s.limit))
			return fmt.Sprintf("killed by SIGKILL, most likely by the kernel's OOM killer: it killed %d process(es) in memory cgroup %s (%s %s) since %s",
				n, s.dir, s.limit, limit, since)
		}
	}
	if now.global > before.global {
		return fmt.Sprintf("killed by SIGKILL, most likely by the kernel's OOM killer: it killed %d process(es) on this machine since %s (/proc/vmstat oom_kill; the machine, or a memory cgroup the order moved to, out of memory)",
			now.global-before.global, since)
	}
	return ""
}
