package api

import "sync"

// lanes runs the NATS submissions of each host one after another, in the
// order they arrived, and those of different hosts in parallel (at most
// parallel at once). A host's order of execution is the order in which its
// submissions are published to its orders stream, so one host's
// submissions must never overtake each other; nothing orders two hosts.
//
// add never blocks: the consumer's MaxAckPending bounds what can be queued,
// and the dispatcher must keep pulling, since a pinned replica that stops
// pulling loses its pin.
type lanes struct {
	run func(*delivery)
	sem chan struct{}

	mu    sync.Mutex
	queue map[string][]*delivery // a host has an entry while its goroutine runs
	held  map[*delivery]struct{} // queued or running
	wg    sync.WaitGroup
}

func newLanes(parallel int, run func(*delivery)) *lanes {
	return &lanes{run: run, sem: make(chan struct{}, parallel), queue: map[string][]*delivery{},
		held: map[*delivery]struct{}{}}
}

// add queues d behind the host's earlier submissions.
func (l *lanes) add(host string, d *delivery) {
	l.mu.Lock()
	q, busy := l.queue[host]
	l.queue[host] = append(q, d)
	l.held[d] = struct{}{}
	l.mu.Unlock()
	if !busy {
		l.wg.Add(1)
		go l.drain(host)
	}
}

// drain runs the host's queue until it is empty.
func (l *lanes) drain(host string) {
	defer l.wg.Done()
	for {
		l.mu.Lock()
		q := l.queue[host]
		if len(q) == 0 {
			delete(l.queue, host)
			l.mu.Unlock()
			return
		}
		d := q[0]
		q[0] = nil
		l.queue[host] = q[1:]
		l.mu.Unlock()
		l.sem <- struct{}{}
		l.run(d)
		<-l.sem
		l.mu.Lock()
		delete(l.held, d)
		l.mu.Unlock()
	}
}

// holding returns the deliveries queued or running now.
func (l *lanes) holding() []*delivery {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*delivery, 0, len(l.held))
	for d := range l.held {
		out = append(out, d)
	}
	return out
}

// wait returns when every lane has run (or dropped) all it was given.
// Only the dispatcher calls add, and not while it waits.
func (l *lanes) wait() { l.wg.Wait() }
