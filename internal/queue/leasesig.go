package queue

import (
	"bytes"
	"context"
	"crypto/hmac"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A host's lease is signed with the host's key (MarkKey, the claim mark's)
// for the reason the mark is: any connection makes the server store a body
// of its choice on any subject of the account by naming it as the reply
// subject of a JetStream API request, so another host's worker seed wrote
// this host's lease key at will. Its holder, finding its renewal refused
// and the key naming another worker, stopped its claims and ended its
// tenure; repeated, the host ran nothing. A standby took a forged put for
// its holder's renewal (a dead holder's host was never taken over), and a
// forged delete with ReleasedHeader for its release (a live holder's host
// was taken over, its running order interrupted).
//
// The value stays the instance, as workers and APIs from before read it,
// with "\n" and the signature after it (leaseValue); a release's delete
// carries its signature in ReleaseSignatureHeader. The signatures carry
// no counter: they can be copied only by who reads the key (the host's
// own workers and the API; NATS permissions keep other hosts' workers to
// their own keys), and LeaseHolder leaves the signature out of what it
// returns.

// ReleaseSignatureHeader carries, on a release's delete, the signature
// of ReleasedHeader's instance as the one that released the lease.
const ReleaseSignatureHeader = "Orderly-Released-Signature"

// signLease is the hex HMAC-SHA256 of the lease key's name (lease.<host>,
// so a signature of one host is no other's), what the write does ("held"
// or "released") and the instance that did it.
func (k MarkKey) signLease(key, op, instance string) string {
	return k.macf("%s\n%s\n%s", key, op, instance)
}

// leaseValue is what instance writes as the lease of key: the instance,
// and with k, "\n" and its signature.
func leaseValue(key, instance string, k MarkKey) []byte {
	if k == nil {
		return []byte(instance)
	}
	return []byte(instance + "\n" + k.signLease(key, "held", instance))
}

// parseLease returns the instance a lease value names and its signature,
// "" for a value with none (a worker without a key, or from before it).
func parseLease(v []byte) (instance, sig string) {
	i := bytes.LastIndexByte(v, '\n')
	if i < 0 {
		return string(v), ""
	}
	return string(v[:i]), string(v[i+1:])
}

// leaseTrust is how a lease value stands with the reader's key.
type leaseTrust int

const (
	leaseSigned   leaseTrust = iota // signed with the key (or no key to check with)
	leaseUnsigned                   // no signature: a worker from before it, or without a key; or forged
	leaseForeign                    // a signature the key did not make: forged, or a worker of the host on another seed
)

// trustLease returns the instance v names and how it stands with k: with
// no key nothing can be checked, and every value is taken as before.
func trustLease(key string, v []byte, k MarkKey) (string, leaseTrust) {
	instance, sig := parseLease(v)
	switch {
	case k == nil:
		return instance, leaseSigned
	case sig == "":
		return instance, leaseUnsigned
	case !hmac.Equal([]byte(sig), []byte(k.signLease(key, "held", instance))):
		return instance, leaseForeign
	}
	return instance, leaseSigned
}

// leaseSeen is what a standby has read of its host's lease while it
// waits, to judge each value it reads by (AcquireLease): a value its
// host's key signed is the holder's; an unsigned one is honoured as an
// older worker's until a signed one was seen (the host's holder was
// upgraded: an older worker could take the key only once it is free,
// which this standby would have found first); any other is ignored, and
// the key taken over once a lease has passed since the last value
// honoured.
type leaseSeen struct {
	key      string // lease.<host>
	host     string
	instance string // the standby's
	k        MarkKey
	signed   bool   // a value k signed was seen
	holder   string // the instance of the last value honoured
	logged   bool   // forged has logged
}

// honours reports whether the value v read of the key is its holder's,
// and which instance it names.
func (s *leaseSeen) honours(v []byte) (string, bool) {
	instance, t := trustLease(s.key, v, s.k)
	switch {
	case t == leaseSigned:
		s.signed = s.signed || s.k != nil
	case t == leaseUnsigned && !s.signed:
	default:
		return instance, false
	}
	s.holder = instance
	return instance, true
}

// released reports whether the delete m of the key is its holder's
// release (Release): it names the instance that released it in
// ReleasedHeader, and with a key, that instance's signature is in
// ReleaseSignatureHeader and it is the holder last honoured, if any (a
// release of an earlier holder, copied, is no release of this one). Any
// other delete is someone else's, as a delete by hand is.
func (s *leaseSeen) released(m *nats.Msg) bool {
	by := m.Header.Get(ReleasedHeader)
	if by == "" || s.k == nil {
		return by != ""
	}
	sig := m.Header.Get(ReleaseSignatureHeader)
	if !hmac.Equal([]byte(sig), []byte(s.k.signLease(s.key, "released", by))) {
		return false
	}
	return s.holder == "" || s.holder == by
}

// forged logs, once per wait, that the key held a value its holder did
// not write: the standby names the host and that another credential did.
func (s *leaseSeen) forged(log *slog.Logger, written string) {
	if s.logged {
		return
	}
	s.logged = true
	log.Error("the host lease's key holds a value not written with this host's NATS credential (another credential wrote it): not taken as its holder's renewal; this standby takes the host only once a lease has passed since its holder last renewed it",
		"host", s.host, "instance", s.instance, "written_as", written)
}

// deletedUnseen reports whether the last message of the lease key is a
// delete that is not a release of its holder (leaseSeen.released), or an
// expiry marker in a bucket that makes none (hostsStream): what a
// standby finds at its start, or at its first try, without having seen
// it happen. Its Create took such a key at once: a delete another
// credential stored as the standby started handed it a live holder's
// host. An absent key (expired, never taken), or one it cannot read, is
// not.
func (q *Queue) deletedUnseen(ctx context.Context, key string, seen *leaseSeen) bool {
	st, err := q.js.Stream(ctx, "KV_"+HostsBucket)
	if err != nil {
		return false
	}
	m, err := st.GetLastMsgForSubject(ctx, "$KV."+HostsBucket+"."+key)
	if err != nil {
		return false
	}
	switch {
	case m.Header.Get("KV-Operation") == "DEL", m.Header.Get(jetstream.MarkerReasonHeader) == "Remove":
		return !seen.released(&nats.Msg{Header: m.Header})
	case m.Header.Get("KV-Operation") == "PURGE", m.Header.Get(jetstream.MarkerReasonHeader) != "":
		return st.CachedInfo().Config.SubjectDeleteMarkerTTL == 0
	}
	return false
}
