package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ClaimMark is how far the orders of a host were claimed, as its worker
// keeps it in MarksBucket (claimed.<host>): the stream sequence of the
// last order claimed, when the stream stored that message (a time no
// earlier than any message at or below Seq was stored) and the attempt
// of its latest claim (an order handed back is claimed again from the
// same message; 0 in a mark written before the attempt was kept). It
// outlives a
// nats-server restart, unlike the host's consumer, whose state is in
// memory (hostConsumerConfig), and a restore of PostgreSQL, unlike the
// claims themselves.
//
// A consumer created again from the host's first message stored delivers
// the acknowledged orders a limits stream still holds (until PurgeAcked)
// once more; the worker only acknowledges those, because PostgreSQL
// shows them claimed. A database restored from a backup taken before
// one's claim holds it queued and never claimed: below the mark, that is
// a database behind what the host did (worker/replay.go).
type ClaimMark struct {
	Seq     uint64    `json:"seq"`
	Stored  time.Time `json:"stored"`
	Attempt int       `json:"attempt,omitempty"`
}

// After reports whether m is past n: a later message claimed, or the same
// one claimed again in a later attempt.
func (m ClaimMark) After(n ClaimMark) bool {
	return m.Seq > n.Seq || m.Seq == n.Seq && m.Attempt > n.Attempt
}

// Passed reports whether the host's worker claimed the order of the
// message at seq, stored at stored, in an attempt past attempt, or claimed
// an order after it: a database that holds that order queued at attempt
// is behind what the host did. Deliveries come in stream order, and one
// is delivered again only while it is unacknowledged, so a later message
// claimed means this one was settled first; the same message claimed
// again keeps the order's attempt, which only claims raise. A mark
// without an attempt (an older worker's) names a claim, attempt 1 at
// least.
func (m ClaimMark) Passed(seq uint64, stored time.Time, attempt int) bool {
	if !m.Covers(seq, stored) {
		return false
	}
	return seq < m.Seq || attempt < max(m.Attempt, 1)
}

// Covers reports whether the message at seq, stored at stored, is at or
// below the mark: delivered to the host's worker before, in stream order.
// A message stored after the mark is not, whatever its sequence: the
// stream was created again since (deleted by hand) and counts from 1.
func (m ClaimMark) Covers(seq uint64, stored time.Time) bool {
	return seq != 0 && seq <= m.Seq && !stored.After(m.Stored)
}

// claimMarkKey is host's key in MarksBucket.
func claimMarkKey(host string) string { return "claimed." + host }

// ClaimMarkOf returns the claim mark NATS holds for host: zero when it
// holds none (no order claimed since the store was new), ErrNoMarksBucket
// when there is no bucket to hold one (not made yet by an API of this
// version): the host's claims could not be written either, and its
// worker shows its guard off from its tenure's start, not from its first
// claim's write.
func (q *Queue) ClaimMarkOf(ctx context.Context, host string) (ClaimMark, error) {
	e, err := q.readMark(ctx, claimMarkKey(host))
	if err != nil || e == nil {
		return ClaimMark{}, err
	}
	var m ClaimMark
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		return ClaimMark{}, fmt.Errorf("read %s in kv bucket %s: %q is not a claim mark", claimMarkKey(host), MarksBucket, e.Value())
	}
	return m, nil
}

// RaiseClaimMark makes host's claim mark m unless NATS holds one at least
// as far (a previous worker's, written last; ClaimMark.After). Only the host's worker may
// write it (natsembed.WorkerPermissions). A bucket no API made yet is
// left alone: nothing to write to (ErrNoMarksBucket).
func (q *Queue) RaiseClaimMark(ctx context.Context, host string, m ClaimMark) error {
	key := claimMarkKey(host)
	val, err := json.Marshal(m)
	if err != nil {
		return err
	}
	for range 8 {
		var kv jetstream.KeyValue
		if kv, err = q.marksKV(ctx, false); err != nil {
			return err
		}
		if kv == nil {
			return ErrNoMarksBucket
		}
		var e jetstream.KeyValueEntry
		e, err = kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			_, err = kv.Create(ctx, key, val)
		case err == nil:
			var cur ClaimMark
			if json.Unmarshal(e.Value(), &cur) == nil && !m.After(cur) {
				return nil
			}
			_, err = kv.Update(ctx, key, val, e.Revision())
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !q.forgetMarksKV(err) {
			break
		}
	}
	return fmt.Errorf("write %s in kv bucket %s: %w", key, MarksBucket, err)
}

// ErrNoMarksBucket: MarksBucket does not exist yet; an API makes it at
// its start.
var ErrNoMarksBucket = errors.New("kv bucket " + MarksBucket + " does not exist yet: an orderly api of this version makes it at its start")
