package main

import (
	"context"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/memory"
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
	go func() { defer wg.Done(); memory.FollowLiveHeap(ctx, base.Load, followLivePeriod, followLiveSustain) }()
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
