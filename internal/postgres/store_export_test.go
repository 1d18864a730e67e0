package postgres

// OpenTweaked exports open to the tests.
var OpenTweaked = open

// QueuedInserts is how many InsertOrder calls wait for the insert
// transaction in flight (groupcommit.go).
func (s *Store) QueuedInserts() int {
	s.inserts.mu.Lock()
	defer s.inserts.mu.Unlock()
	return len(s.inserts.pending)
}

// MaxInsertsInFlight is how many insert transactions a Store runs at once.
const MaxInsertsInFlight = maxFlying

// JobCheckOf is a JobCheck whose try before left transaction xid in doubt.
func JobCheckOf(xid string) JobCheck { return JobCheck{xid: xid} }

// JobCheckOn is JobCheckOf for a try made on timeline (the server's
// timeline as timelineSQL reads it).
func JobCheckOn(xid, timeline string) JobCheck { return JobCheck{xid: xid, timeline: timeline} }
