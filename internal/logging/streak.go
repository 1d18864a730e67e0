package logging

import "time"

// streakLogEvery is how often a failure that keeps repeating is logged
// again after its first.
const streakLogEvery = time.Minute

// Streak follows a run of failures of a task repeated every few seconds
// (a periodic job, a supervisor's restart) so that a dependency that stays
// down is logged once, then once a minute, not on every try.
type Streak struct {
	n      int
	logged time.Time
}

// Fail counts a failure and reports the run's length and whether to log
// this one: the first, then one at least a minute after the last logged.
func (s *Streak) Fail() (n int, log bool) {
	s.n++
	if s.n == 1 || time.Since(s.logged) >= streakLogEvery {
		s.logged = time.Now()
		return s.n, true
	}
	return s.n, false
}

// End ends the run and returns how many failures it had (0: none, so
// there is no recovery to log).
func (s *Streak) End() int {
	n := s.n
	s.n = 0
	return n
}
