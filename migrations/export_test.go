package migrations

import "time"

// ShortLockWaits makes the migrations' lock waits and pauses short for a
// test, until the returned function restores them.
func ShortLockWaits(timeout, pause time.Duration, tries int) (restore func()) {
	t, p, n := lockTimeout, lockPause, lockTries
	lockTimeout, lockPause, lockTries = timeout, pause, tries
	return func() { lockTimeout, lockPause, lockTries = t, p, n }
}
