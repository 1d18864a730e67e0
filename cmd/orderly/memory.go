package main

import (
	"context"
	"runtime/debug"
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
	memory.SetLimit(w.Current().MemoryLimitBytes, a.getenv)
	w.Subscribe(func(c config.Config) { memory.SetLimit(c.MemoryLimitBytes, a.getenv) })
	go func() {
		memory.TrimWhenIdle(ctx, idleTrimPeriod)
		debug.SetMemoryLimit(before)
	}()
}
