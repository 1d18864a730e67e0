package testenv

import (
	"cmp"
	"fmt"
	"runtime"
	"slices"
	"strings"
)

// AllocsUnder calls do n times with the heap profile sampling every
// allocation and returns the allocations per call made under frames
// (prefixes of function names: a goroutine's frames, the product's, not
// the test's), counted exactly from the profile (not
// testing.AllocsPerRun, which counts every goroutine of the process),
// and the sites that made most of them, for the log. Call do once before
// it, for what is made once (pools, plans, subscriptions).
func AllocsUnder(n int, frames []string, do func()) (float64, []string) {
	per, sites := AllocSitesUnder(n, frames, do)
	var top []string
	for i, s := range sites {
		if i == 60 {
			break
		}
		top = append(top, fmt.Sprintf("%6.2f %s", s.PerCall, s.Name))
	}
	return per, top
}

// AllocSite is where AllocSitesUnder counted allocations: Name is the
// innermost frame of orderly's that led to them and the innermost frame
// outside the runtime that made them ("worker.(*Worker).feed |
// github.com/nats-io/nats.go/jetstream.(*jetStreamMsg).Metadata").
type AllocSite struct {
	Name    string
	PerCall float64
}

// AllocSitesUnder is AllocsUnder with every site, most first: a test
// that counts calls of a function that allocates once per call reads
// them here.
func AllocSitesUnder(n int, frames []string, do func()) (float64, []AllocSite) {
	rate := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	defer func() { runtime.MemProfileRate = rate }()
	before := allocSites(frames)
	for range n {
		do()
	}
	after := allocSites(frames)
	var total int64
	var sites []AllocSite
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			total += d
			sites = append(sites, AllocSite{k, float64(d) / float64(n)})
		}
	}
	slices.SortFunc(sites, func(a, b AllocSite) int { return cmp.Compare(b.PerCall, a.PerCall) })
	return float64(total) / float64(n), sites
}

// allocSites sums the heap profile's allocations made under frames, by
// allocation site (the innermost frame outside the runtime, with the
// innermost frame of orderly's that led to it).
func allocSites(frames []string) map[string]int64 {
	runtime.GC()
	runtime.GC() // the profile is published at the end of a cycle
	var recs []runtime.MemProfileRecord
	for {
		n, ok := runtime.MemProfile(recs, true)
		if ok {
			recs = recs[:n]
			break
		}
		recs = make([]runtime.MemProfileRecord, n+100)
	}
	out := map[string]int64{}
	for _, r := range recs {
		fs := runtime.CallersFrames(r.Stack())
		var leaf, ours string
		counted := false
		for {
			f, more := fs.Next()
			if leaf == "" && !strings.HasPrefix(f.Function, "runtime.") {
				leaf = f.Function
			}
			if ours == "" && strings.HasPrefix(f.Function, "github.com/orderly-run/orderly/") {
				ours = f.Function
			}
			for _, p := range frames {
				counted = counted || strings.HasPrefix(f.Function, p)
			}
			if !more {
				break
			}
		}
		if counted {
			out[strings.TrimPrefix(ours, "github.com/orderly-run/orderly/")+" | "+leaf] += r.AllocObjects
		}
	}
	return out
}
