package queue

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// hostsRead is the hosts bucket's stream as this process last read it
// (readHosts): its handle, with the info the server stated (its limits,
// its last sequence, the server's time), and when the answer came.
//
// The lease's waits and takes use what was read last instead of reading
// the stream's info on their path: a read held up (its request's bound,
// 5 s: a JetStream API slow to give a stream's info, a loaded server)
// held up what followed it, each time. The bucket's limits read as a
// wait's watch began, and the stream read before each look at the lease
// key's last message, took a holder that died then past the recovery
// bound; the server's time read when a renewal came during a wait on the
// server's contact, or at a try that found the key, aged the renewal
// that much late; the bucket's last sequence read before a signed take
// or take-back delayed the take, and a holder taking back its deleted
// key lost its host to its standby meanwhile (docs/decisions.md, hF28).
// Every read of the info keeps what it answered: a worker's Bind and an
// API's New, the holder's reads of the TTL (every minute), a standby's
// (at its wait's start and every half lease, beside the wait).
type hostsRead struct {
	st jetstream.Stream
	at time.Time // when the answer came, on this process's monotonic clock
}

// readHosts reads the hosts bucket's stream now, sent again at once when
// a drop of the connection ended the read, and keeps what it read.
func (q *Queue) readHosts(ctx context.Context) (jetstream.Stream, error) {
	var st jetstream.Stream
	err := q.RetryOnDrop(ctx, func(ctx context.Context) (err error) {
		st, err = q.js.Stream(ctx, "KV_"+HostsBucket)
		return err
	})
	if err != nil {
		return nil, err
	}
	q.keepHosts(st)
	return st, nil
}

// keepHosts keeps st, just read, as the hosts bucket's stream last read.
func (q *Queue) keepHosts(st jetstream.Stream) {
	q.hostsKept.Store(&hostsRead{st: st, at: time.Now()})
}

// keptHosts is the hosts bucket's stream as last read; nil when it was
// never read.
func (q *Queue) keptHosts() *hostsRead { return q.hostsKept.Load() }

// keptHostsStream is the hosts bucket's stream as last read, read now
// when it never was. Its handle's requests name the stream, not what
// was read of it: the info may be old, the handle is not.
func (q *Queue) keptHostsStream(ctx context.Context) (jetstream.Stream, error) {
	if r := q.keptHosts(); r != nil {
		return r.st, nil
	}
	return q.readHosts(ctx)
}

// marked reports whether the bucket, as last read, has expiry markers
// (hostsStream: one an orderly from before made); false when unread.
func (r *hostsRead) marked() bool {
	return r != nil && r.st.CachedInfo().Config.SubjectDeleteMarkerTTL > 0
}

// lastSeq is the bucket's last sequence as last read; 0 when unread.
// The bucket's sequence only grows, so it is at most the last sequence
// now (a bucket made again since starts anew: a take naming a revision
// past the new bucket's is judged a copy by nobody, trustLease).
func (r *hostsRead) lastSeq() uint64 {
	if r == nil {
		return 0
	}
	return r.st.CachedInfo().State.LastSeq
}

// serverNow estimates the server's time now from the last read: the
// time its answer stated, plus how long ago the answer came on this
// process's monotonic clock. The server stated its time before the
// answer came, so the estimate is at most the server's time now, and an
// age judged by it at most the true age: a standby that times a renewal
// by it waits at least a lease after the server stored the renewal, as
// it waited when it read the server's time. ok is false when nothing was
// read within a minute: two clocks drift apart (up to 0.05 % each, an
// NTP bound), and an older reading could put the estimate past the
// server's time.
func (r *hostsRead) serverNow() (now time.Time, ok bool) {
	if r == nil || time.Since(r.at) > time.Minute {
		return time.Time{}, false
	}
	stated := r.st.CachedInfo().TimeStamp
	if stated.IsZero() {
		return time.Time{}, false
	}
	return stated.Add(time.Since(r.at)), true
}
