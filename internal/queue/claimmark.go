package queue

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
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

// MarkKey authenticates a host's claim mark: its worker signs the mark it
// writes and trusts only a mark signed so. NATS cannot keep another
// host's worker from writing the key: any connection makes the server
// store a body of its choice on any subject of the account by naming it
// as the reply subject of a JetStream API request (a direct get of its
// own heartbeat, no_hdr), whatever its publish permissions; a forged
// mark far ahead would have the host's next tenure cancel every order
// PostgreSQL holds queued as restored from a backup. The key is derived
// from the worker's own NATS credential (NewMarkKey), which the host's
// standby shares and no other host holds. Nil: no credential to derive
// it from (an open NATS), marks are written unsigned and read unchecked.
type MarkKey []byte

// NewMarkKey derives the claim mark key from secret, the seed of the
// worker's NATS credential; the seed itself never signs anything but the
// server's nonce.
func NewMarkKey(secret []byte) MarkKey { return deriveKey(secret, "orderly claim mark key v1") }

// deriveKey is the HMAC-SHA256 of label under secret: one key per label
// from one seed.
func deriveKey(secret []byte, label string) MarkKey {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(label))
	return h.Sum(nil)
}

// macf is the hex HMAC-SHA256 under k of the fields as format writes
// them: every signature of the marks, the generation and the lease.
func (k MarkKey) macf(format string, a ...any) string {
	h := hmac.New(sha256.New, k)
	fmt.Fprintf(h, format, a...)
	return hex.EncodeToString(h.Sum(nil))
}

// sign is the signature of m as the mark of key (claimed.<host>): the
// hex HMAC-SHA256 of the key's name and the mark's fields, so a mark
// signed for one host is no other host's, and the times compare as
// instants whatever zone they were written in.
func (k MarkKey) sign(key string, m ClaimMark) string {
	return k.macf("%s\n%d\n%s\n%d", key, m.Seq, m.Stored.UTC().Format(time.RFC3339Nano), m.Attempt)
}

// signedMark is a claim mark as MarksBucket holds it: the mark's fields
// (an older worker reads them, ignoring the signature) and Sig, its
// worker's signature (MarkKey.sign); none from a worker with no key or
// from before the signature.
type signedMark struct {
	ClaimMark
	Sig string `json:"sig,omitempty"`
}

// ErrUnauthenticatedClaimMark: the claim mark NATS holds for the host
// was not signed with its worker's key (MarkKey): another host's worker
// may have written it, or an orderly from before the signature, or this
// host's worker with another credential. Its reader takes it as no mark.
var ErrUnauthenticatedClaimMark = errors.New("the claim mark was not written with this host's NATS credential")

// decodeClaimMark reads the value of key, checking its signature with k
// unless k is nil.
func decodeClaimMark(key string, val []byte, k MarkKey) (ClaimMark, error) {
	var s signedMark
	if err := json.Unmarshal(val, &s); err != nil {
		return ClaimMark{}, fmt.Errorf("read %s in kv bucket %s: %q is not a claim mark", key, MarksBucket, val)
	}
	if k == nil {
		return s.ClaimMark, nil
	}
	switch {
	case s.Sig == "":
		return ClaimMark{}, fmt.Errorf("read %s in kv bucket %s: %w: it carries no signature (an orderly from before it, or a worker without a NATS credential, wrote it; or another host's worker did)", key, MarksBucket, ErrUnauthenticatedClaimMark)
	case !hmac.Equal([]byte(s.Sig), []byte(k.sign(key, s.ClaimMark))):
		return ClaimMark{}, fmt.Errorf("read %s in kv bucket %s: %w: its signature does not match (another host's worker wrote it, or this host's with another credential)", key, MarksBucket, ErrUnauthenticatedClaimMark)
	}
	return s.ClaimMark, nil
}

// ClaimMarkOf returns the claim mark NATS holds for host: zero when it
// holds none (no order claimed since the store was new), ErrNoMarksBucket
// when there is no bucket to hold one (not made yet by an API of this
// version): the host's claims could not be written either, and its
// worker shows its guard off from its tenure's start, not from its first
// claim's write. With a key, a mark it did not sign is
// ErrUnauthenticatedClaimMark. A read a drop of the connection ended is
// sent again at once (RetryOnDrop).
func (q *Queue) ClaimMarkOf(ctx context.Context, host string, k MarkKey) (ClaimMark, error) {
	var e jetstream.KeyValueEntry
	err := q.RetryOnDrop(ctx, func(ctx context.Context) (err error) {
		e, err = q.readMark(ctx, claimMarkKey(host))
		return err
	})
	if err != nil || e == nil {
		return ClaimMark{}, err
	}
	return decodeClaimMark(claimMarkKey(host), e.Value(), k)
}

// RaiseClaimMark makes host's claim mark m, signed with k, unless NATS
// holds one at least as far (a previous worker's, written last;
// ClaimMark.After). A mark there that k did not sign is overwritten,
// however far it claims to be: kept, a forged mark would keep the host's
// own out for good. Only the host's worker may write it
// (natsembed.WorkerPermissions), though not only it can (MarkKey). A
// bucket no API made yet is left alone: nothing to write to
// (ErrNoMarksBucket).
//
// A raise a drop of the connection ended is made again at once
// (RetryOnDrop): a write lost with the connection, or whose answer was,
// waited out the worker's markWait (2 s) and left the host's restore
// guard off until the next write (docs/decisions.md, hD22). Made again,
// it reads the mark first, and one the first raise wrote is as far as
// m: nothing more is written.
func (q *Queue) RaiseClaimMark(ctx context.Context, host string, m ClaimMark, k MarkKey) error {
	return q.RetryOnDrop(ctx, func(ctx context.Context) error { return q.raiseClaimMark(ctx, host, m, k) })
}

// raiseClaimMark is one RaiseClaimMark.
func (q *Queue) raiseClaimMark(ctx context.Context, host string, m ClaimMark, k MarkKey) error {
	key := claimMarkKey(host)
	s := signedMark{ClaimMark: m}
	if k != nil {
		s.Sig = k.sign(key, m)
	}
	val, err := json.Marshal(s)
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
			if cur, err := decodeClaimMark(key, e.Value(), k); err == nil && !m.After(cur) {
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
