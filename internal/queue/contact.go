package queue

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// contact is what a standby knows of its own contact with the NATS
// server: whether the server answers it now, and since when it has
// answered without a silence. A standby takes a host whose lease lapsed
// only once the server has answered it for a whole lease (awaitContact):
// the silence it saw is evidence that the holder died only if the
// server was there to hear the holder's renewals.
//
// A frozen nats-server (SIGSTOP, a hung machine or VM) keeps every
// connection open and answers nothing; on its thaw its clock has moved
// on by the whole freeze, it expires every lease key at once, and the
// requests waiting in its sockets are served. The standby's take,
// waiting there or sent at the first answer, beat the holder's renewal
// (one request against three: an update refused, a read, a take) and
// the standby took the host from a live holder, interrupting the order
// it ran, after every freeze longer than the lease
// (TestFaultsNATSFrozen, three takes in three freezes). Kept in the
// Queue, so that an AcquireLease that failed during the silence leaves
// it to the next.
type contact struct {
	mu sync.Mutex
	// silent: the last probe went unanswered within its time.
	silent bool
	// since: the first prompt answer after the last silence; zero
	// while no silence was seen.
	since time.Time
	// told: the wait after the last silence was logged.
	told bool
}

// contactProbes are the prober's timings for a lease: a probe every
// lease/8 (50 ms to 1 s), answered within lease/2 or taken for a
// silence. A silence shorter than lease/2 cannot by itself lapse a lease
// renewed every third of it: its last renewal before the silence is at
// most a third of a lease old as it begins, so less than five sixths at
// its end, and the standby, which saw no renewal during it either, is
// not due for as long. The bound was lease/4: a standby whose round
// trip to the server passed it (0.6 s under a lease of 2 s: a loaded
// machine, a distant network) took every answer for a silence and never
// took a host, not even a dead holder's
// (TestStandbyWithASlowRoundTripTakesADeadHoldersHost; TestFaultsFleet
// under load, docs/decisions.md, hF25).
func contactProbes(lease time.Duration) (every, slow time.Duration) {
	return min(max(lease/8, 50*time.Millisecond), time.Second), max(lease/2, 50*time.Millisecond)
}

// probeContact sends the server a ping every so often until ctx ends
// and records whether it answered within slow.
func (q *Queue) probeContact(ctx context.Context, every, slow time.Duration) {
	t := time.NewTimer(0)
	defer t.Stop()
	due := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// late: how long after it was due the probe went out, this
		// process's own delay (a loaded machine), which the probe's
		// time does not include.
		sent, late := time.Now(), time.Since(due)
		pctx, cancel := context.WithTimeout(ctx, slow)
		err := q.nc.FlushWithContext(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		q.logSilence(err, sent, late)
		q.contact.answer(err == nil)
		t.Reset(every)
		due = time.Now().Add(every)
	}
}

// logSilence logs at DEBUG a probe the server did not answer within
// its time, with how long it waited and how late it was sent, so that a
// wait on the contact that starts again and again shows whether the
// server was silent or this process slow.
func (q *Queue) logSilence(err error, sent time.Time, late time.Duration) {
	if err != nil {
		q.logger().Debug("a probe of the NATS server went unanswered within its time: counted as a silence",
			"waited", time.Since(sent).Round(time.Millisecond), "sent_late", late.Round(time.Millisecond), "error", err)
	}
}

// answersNow probes the server once more, just before a take: the
// prober finds a silence only a probe's time (slow) after it began, and
// a take sent into a server that froze meanwhile was served at its
// thaw, after the holder's lease expired there (TestFaultsNATSFrozen: a
// freeze that began as a standby's wait ended, once).
func (q *Queue) answersNow(ctx context.Context, slow time.Duration) bool {
	sent := time.Now()
	pctx, cancel := context.WithTimeout(ctx, slow)
	defer cancel()
	err := q.nc.FlushWithContext(pctx)
	if ctx.Err() == nil {
		q.logSilence(err, sent, 0)
		q.contact.answer(err == nil)
	}
	return err == nil
}

// answer records a probe's outcome.
func (c *contact) answer(prompt bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case !prompt:
		c.silent = true
	case c.silent:
		c.silent, c.since, c.told = false, time.Now(), false
	}
}

// wait is how long the standby still waits for its contact with the
// server to count: a lease since the server's first answer after its
// last silence; 0 when it counts already. silent: the server does not
// answer now.
func (c *contact) wait(lease time.Duration) (d time.Duration, silent bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.silent:
		return lease, true
	case !c.since.IsZero() && time.Since(c.since) < lease:
		return lease - time.Since(c.since), false
	}
	return 0, false
}

// tell reports, once per silence, that the standby waits on its
// contact after one.
func (c *contact) tell() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	told := c.told
	c.told = true
	return !told
}

// awaitContact waits until the server has answered this process for a
// whole lease since its last silence (contact), checking every check.
// A server that does not answer now is an error once a probe had its
// time (slow): the caller tries again later, as after a request that
// timed out, and the silence is kept for that try.
func (q *Queue) awaitContact(ctx context.Context, host, instance string, lease, slow, check time.Duration) error {
	began := time.Now()
	answered := false // the server answered at the last check
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		d, silent := q.contact.wait(lease)
		if silent && answered {
			q.logger().Debug("the NATS server fell silent during the wait on its contact: the wait starts again once it answers",
				"host", host, "instance", instance, "waited", time.Since(began).Round(time.Millisecond))
		}
		answered = !silent
		switch {
		case d <= 0 && q.answersNow(ctx, slow):
			return nil
		case d <= 0:
			continue // silent since the last probe: the error, or the wait
		case silent && time.Since(began) > 2*slow:
			return fmt.Errorf("acquire lease of host %s: the NATS server does not answer (a frozen server, or a partition)", host)
		case !silent && q.contact.tell():
			q.logger().Info("the NATS server answers again after a silence: this standby takes the host only once it has answered for a whole lease, so that a holder the same silence kept from renewing renews first",
				"host", host, "instance", instance, "lease", lease, "wait", d.Round(time.Millisecond))
		}
		t := time.NewTimer(min(d, check))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// HeardSilence records that the NATS server did not answer this process
// just before it could use it: its start waited for a server that
// accepted no connection or said nothing on one (stopped, frozen, or
// restarting). Its standbys then take a key not released only once the
// server has answered for a whole lease, as after a silence they heard
// themselves: a worker started during a freeze heard nothing, took the
// key its live holder had not renewed yet at the thaw (the server
// expires every lease then), and ended the order the holder ran
// (TestWorkerStartedDuringAFreezeWaitsALeaseOfContact).
func (q *Queue) HeardSilence() { q.contact.answer(false) }
