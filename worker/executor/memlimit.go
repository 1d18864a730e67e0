package executor

import (
	"os"
	"path/filepath"
	"strconv"
)

// MemoryLimit is the lowest memory limit of the memory cgroups this
// process is charged to, its own and those above it up to the
// hierarchy's root (cgroup v2's memory.max and memory.high, v1's
// memory.limit_in_bytes): what it may take before the kernel throttles
// or ends it. 0 when none is set or none can be read. A server command's
// soft memory limit follows its live heap up to below it
// (memory.FollowLiveHeap's ceiling).
func MemoryLimit() int64 {
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return 0
	}
	return memoryLimit(self, mounts)
}

// memoryLimit is MemoryLimit for the process whose /proc/self/cgroup
// and mountinfo are self and mounts.
func memoryLimit(self, mounts []byte) int64 {
	dir, mp := controllerDir("memory", self, mounts)
	if dir == "" {
		return 0
	}
	var least int64
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		for _, f := range []string{"memory.max", "memory.high", "memory.limit_in_bytes"} {
			// "max", and v1's page-rounded MaxInt64, are no limit.
			n, err := strconv.ParseInt(readFirstField(filepath.Join(d, f)), 10, 64)
			if err == nil && n > 0 && n < 1<<62 && (least == 0 || n < least) {
				least = n
			}
		}
		if d == filepath.Clean(mp) || d == filepath.Dir(d) {
			return least
		}
	}
}
