package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

func pct(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func durStats(d []time.Duration) string {
	if len(d) == 0 {
		return "n/a"
	}
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return fmt.Sprintf("mean %s, p50 %s, p99 %s, max %s", ms(sum/time.Duration(len(d))), ms(pct(d, 0.5)), ms(pct(d, 0.99)), ms(pct(d, 1)))
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", ms64(d))
}

func ms64(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }
