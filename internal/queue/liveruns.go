package queue

// LiveRuns tells a live chunk of an earlier run of an order from one of
// its newest run, by the run in the chunk's Nats-Msg-Id (LiveOutput's
// msg): an idempotent order run again (its worker lost) has the same id,
// and the live stream takes no rollups, so the chunks of every run of it
// are on its subject. A run is a random token: one is older than another
// only by which came first. A worker frozen with its order (a paused VM),
// thawed after the order ran again elsewhere, flushes the first run's
// chunks from its reconnect buffer after the next run's; a run seen
// before the newest is such an earlier one. Every reader of the live
// output skips its chunks: the stored partial output (PartialOutput), an
// SSE follower, stage0's execute stream. The zero value is ready; one
// LiveRuns reads one order's chunks, in the stream's order.
type LiveRuns struct {
	newest  string          // the run of the newest chunks
	earlier map[string]bool // the runs seen before newest
}

// Earlier reports whether the chunk whose Nats-Msg-Id is msgID is of a
// run seen before the newest, and takes any other run for the newest
// from now on. A chunk without a run (an older worker's, or one a host's
// seed published without the header) is never earlier: nothing tells
// its run.
func (l *LiveRuns) Earlier(msgID string) bool {
	r, _, ok := chunkRun(msgID)
	if !ok || r == l.newest {
		return false
	}
	if l.earlier[r] {
		return true
	}
	if l.newest != "" {
		if l.earlier == nil {
			l.earlier = map[string]bool{}
		}
		l.earlier[l.newest] = true
	}
	l.newest = r
	return false
}
