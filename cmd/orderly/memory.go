package main

import (
	"context"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/memory"
	"github.com/orderly-run/orderly/worker/executor"
)

// idleTrimPeriod is how long a server command must go without a garbage
// collection before it returns freed memory to the system.
const idleTrimPeriod = 10 * time.Second

// boundMemory applies memory_limit_bytes now and on every reload, and
// trims freed memory whenever the process goes idle, for as long as ctx
// lasts; then the process's previous limit is back (a command run inside
// a test process leaves no limit behind). serve, api and worker call it;
// fleet-sim, which stands in for many worker processes, keeps the
// runtime's defaults.
func (a *app) boundMemory(ctx context.Context, w *config.Watcher) {
	before := debug.SetMemoryLimit(-1)
	var base atomic.Int64 // the configured limit FollowLiveHeap keeps as a floor; 0: none, or GOMEMLIMIT's
	set := func(limit int64) {
		memory.SetLimit(limit, a.getenv)
		if a.getenv("GOMEMLIMIT") != "" {
			limit = 0
		}
		base.Store(limit)
	}
	set(w.Current().MemoryLimitBytes)
	w.Subscribe(func(c config.Config) { set(c.MemoryLimitBytes) })
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); memory.TrimWhenIdle(ctx, idleTrimPeriod) }()
	ceiling := memoryCeiling(executor.MemoryLimit(), memTotal())
	go func() {
		defer wg.Done()
		memory.FollowLiveHeap(ctx, base.Load, ceiling, followLivePeriod, followLiveSustain)
	}()
	go func() {
		wg.Wait()
		debug.SetMemoryLimit(before)
	}()
}

// followLivePeriod is how often a server command checks its soft memory
// limit against the live heap (memory.FollowLiveHeap).
const followLivePeriod = time.Second

// followLiveSustain is how many checks in a row the limit must leave the
// live heap too little room before FollowLiveHeap raises it: longer than
// a large order's transient, short against the minutes a deduplication
// window takes to fill or to empty.
const followLiveSustain = 5

// memoryCeiling is the highest soft memory limit FollowLiveHeap may
// raise to: seven eighths of what the process's memory cgroup allows
// (cgroup, 0: none), else of the machine's memory (total, 0: unknown).
// The eighth left is for what the runtime's limit does not count: the
// executable's pages and, in a cgroup, the page cache it is charged
// (serve's NATS and PostgreSQL files). 0: no ceiling.
func memoryCeiling(cgroup, total int64) int64 {
	limit := cgroup
	if limit <= 0 || total > 0 && total < limit {
		limit = total
	}
	if limit <= 0 {
		return 0
	}
	return limit - limit/8
}

// memTotal is the machine's memory (/proc/meminfo's MemTotal), 0 when
// it cannot be read.
func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(v)
			if len(f) == 2 && f[1] == "kB" {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n << 10
			}
		}
	}
	return 0
}
