package postgres

import (
	"fmt"
	"sync/atomic"
	"time"
)

// diskFullState is PostgreSQL's disk_full: a table, an index or a
// temporary file could not grow ("could not extend file …: No space left
// on device"). The statement is refused and the session goes on; reads
// keep working.
const diskFullState = "53100"

// diskFull is the last refusal for want of disk space this process saw,
// from any store; nil before the first.
var diskFull atomic.Pointer[diskFullSeen]

type diskFullSeen struct {
	first, last time.Time // first of the episode
	count       int64
}

// diskFullEpisode is how long after the last refusal a new one starts a
// new episode (and DiskFull stops saying so).
const diskFullEpisode = time.Minute

// noteDiskFull records a refusal for want of disk space.
func noteDiskFull() {
	now := time.Now()
	for {
		prev := diskFull.Load()
		next := &diskFullSeen{first: now, last: now, count: 1}
		if prev != nil && now.Sub(prev.last) < diskFullEpisode {
			next.first, next.count = prev.first, prev.count+1
		}
		if diskFull.CompareAndSwap(prev, next) {
			return
		}
	}
}

// DiskFull says, while PostgreSQL refused a statement of this process for
// want of disk space in the last minute, how many since when (for
// /readyz, which stays ready: reads work). /readyz answers anyone, so the
// text is generic: PostgreSQL's own message names the data file that
// could not grow ("could not extend file \"base/16384/…\""), which is
// in the log line of each refused request, not here.
func DiskFull() (string, bool) {
	seen := diskFull.Load()
	if seen == nil || time.Since(seen.last) >= diskFullEpisode {
		return "", false
	}
	return fmt.Sprintf("PostgreSQL refused %d write(s) for want of disk space (SQLSTATE 53100) since %s, the last %s ago; the log has each refusal",
		seen.count, seen.first.UTC().Format(time.RFC3339), time.Since(seen.last).Round(time.Second)), true
}
