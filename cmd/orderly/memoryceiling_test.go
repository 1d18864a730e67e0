package main

import "testing"

// TestMemoryCeilingLeavesAnEighth: the soft limit follows the live heap
// up to seven eighths of what the memory cgroup allows, or of the
// machine where no cgroup limits it, whichever is lower.
func TestMemoryCeilingLeavesAnEighth(t *testing.T) {
	const MiB, GiB = 1 << 20, 1 << 30
	for _, tt := range []struct {
		cgroup, total, want int64
	}{
		{512 * MiB, 16 * GiB, 448 * MiB},
		{0, 8 * GiB, 7 * GiB},
		{2 * GiB, 1 * GiB, 896 * MiB},
		{0, 0, 0},
	} {
		if got := memoryCeiling(tt.cgroup, tt.total); got != tt.want {
			t.Errorf("memoryCeiling(%d, %d) = %d, want %d", tt.cgroup, tt.total, got, tt.want)
		}
	}
	if memTotal() <= 0 {
		t.Error("memTotal read no MemTotal from /proc/meminfo")
	}
}
