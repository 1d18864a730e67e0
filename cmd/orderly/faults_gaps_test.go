package main

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// idleGap is a stretch in which a host started nothing though an order
// it had accepted waited: from the later of the host's last order end
// and that order's acceptance, to its start.
type idleGap struct {
	host string
	tag  string    // the order that waited
	from time.Time // the previous order's end, or the acceptance
	d    time.Duration
}

// longestIdleGaps returns the n longest idle gaps of every host, longest
// first. The recovery bound measures only from the faults a scenario
// names; a host that sat idle with work waiting for another reason (a
// consumer that delivered late, a takeover that waited for nothing) shows
// here. Only gaps that follow an order's end count: after a kill the
// host's time is the recovery's, measured from the fault.
func longestIdleGaps(l *faultLoad, n int) []idleGap {
	accepted := map[string]time.Time{}
	for _, o := range l.snapshot() {
		if o.accepted() {
			accepted[o.tag] = o.answered
		}
	}
	var gaps []idleGap
	for host, tl := range l.tails {
		var lastEnd time.Time
		started := map[string]bool{}
		for _, ml := range tl.snapshot() {
			if !ml.start {
				lastEnd = ml.at
				continue
			}
			first := !started[ml.tag]
			started[ml.tag] = true
			at, ok := accepted[ml.tag]
			if !first || !ok || lastEnd.IsZero() {
				continue
			}
			from := lastEnd
			if at.After(from) {
				from = at
			}
			gaps = append(gaps, idleGap{host: host, tag: ml.tag, from: from, d: ml.at.Sub(from)})
		}
	}
	slices.SortFunc(gaps, func(a, b idleGap) int { return cmp.Compare(b.d, a.d) })
	return gaps[:min(n, len(gaps))]
}

// formatGaps writes gaps on one line for a test's log.
func formatGaps(gaps []idleGap) string {
	var parts []string
	for _, g := range gaps {
		parts = append(parts, fmt.Sprintf("%s %s from %s before %s", g.host, g.d.Round(10*time.Millisecond), g.from.Format("15:04:05.000"), g.tag))
	}
	return strings.Join(parts, ", ")
}
