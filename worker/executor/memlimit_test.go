package executor

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMemoryLimitIsTheLeastOnTheWayUp: the limit a server command's
// soft limit stays under is the lowest of its memory cgroup's and its
// ancestors' (a pod's limit sits above the container's cgroup), v2's
// "max" and v1's page-rounded MaxInt64 being none.
func TestMemoryLimitIsTheLeastOnTheWayUp(t *testing.T) {
	write := func(path, v string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name, fs, self string
		files          map[string]string
		want           int64
	}{
		{"v2, the pod's limit above the container's none", "cgroup2", "0::/pod/ctr",
			map[string]string{"pod/ctr/memory.max": "max", "pod/ctr/memory.high": "max", "pod/memory.max": "536870912"}, 512 << 20},
		{"v2, memory.high below memory.max", "cgroup2", "0::/svc",
			map[string]string{"svc/memory.max": "1073741824", "svc/memory.high": "805306368"}, 768 << 20},
		{"v2, none", "cgroup2", "0::/svc", map[string]string{"svc/memory.max": "max"}, 0},
		{"v1, none", "cgroup", "4:memory:/svc", map[string]string{"svc/memory.limit_in_bytes": "9223372036854771712",
			"memory.limit_in_bytes": "9223372036854771712"}, 0},
		{"v1, its own", "cgroup", "4:memory:/svc", map[string]string{"svc/memory.limit_in_bytes": "268435456"}, 256 << 20},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mp := t.TempDir()
			for f, v := range tt.files {
				write(filepath.Join(mp, f), v)
			}
			opts := "rw"
			if tt.fs == "cgroup" {
				opts = "rw,memory"
			}
			mounts := "34 30 0:31 / " + mp + " rw,relatime - " + tt.fs + " " + tt.fs + " " + opts + "\n"
			if got := memoryLimit([]byte(tt.self+"\n"), []byte(mounts)); got != tt.want {
				t.Errorf("memoryLimit = %d, want %d", got, tt.want)
			}
		})
	}
}
