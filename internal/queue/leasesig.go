package queue

import (
	"bytes"
	"context"
	"crypto/hmac"
	"errors"
	"log/slog"
	"strconv"
	"strings"

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
// The value starts with the instance, as workers and APIs from before
// read it, with "\n", the key's revision it was written after, "\n" and
// the signature after it (leaseValue); a release's delete carries its
// signature in ReleaseSignatureHeader. A value can be copied only by who
// reads the key (the host's own workers and the API; NATS permissions
// keep other hosts' workers to their own keys), and LeaseHolder leaves the
// signature out of what it returns; a copy written again names a revision
// below the one it copied, which its readers know (trustLease's floor).
// A release names the revision it deletes after too (ReleasedAfterHeader),
// and counts only for the holder it names, for a standby that last
// honoured that holder, and at or past the last renewal it honoured.

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
// and with k, "\n", after, "\n" and its signature of both. after is the
// key's last revision as the writer knows it at the write (the revision
// its update is conditioned on, the one it read just before, or the
// stream's last sequence before a take): every value legitimately
// written after another names a revision at or past it, and a copy of a
// value written again later names one below the value it copied
// (trustLease's floor). Without it a signed value was valid for its
// instance's whole tenure: a copy written by another credential ended a
// live holder's tenure (an earlier holder's) or kept a standby waiting
// on a dead one (its last renewal's).
func leaseValue(key, instance string, after uint64, k MarkKey) []byte {
	if k == nil {
		return []byte(instance)
	}
	body := instance + "\n" + strconv.FormatUint(after, 10)
	return []byte(body + "\n" + k.signLease(key, "held", body))
}

// leaseRead is a lease value taken apart (parseLease).
type leaseRead struct {
	instance string
	after    uint64 // the revision it was written after (leaseValue)
	counted  bool   // it carries after: a worker from before it wrote none
	body     string // what its signature signs: the instance, and after
	sig      string // "" for none (a worker without a key, or from before it)
}

// parseLease takes a lease value apart. A signed value from a worker
// before after is the instance, "\n" and the signature of the instance;
// those workers read the instance of a value with after as the instance
// and after, "\n" between, and its signature checks for them too.
func parseLease(v []byte) leaseRead {
	i := bytes.LastIndexByte(v, '\n')
	if i < 0 {
		return leaseRead{instance: string(v), body: string(v)}
	}
	r := leaseRead{instance: string(v[:i]), body: string(v[:i]), sig: string(v[i+1:])}
	if j := strings.LastIndexByte(r.body, '\n'); j >= 0 {
		if after, err := strconv.ParseUint(r.body[j+1:], 10, 64); err == nil {
			r.instance, r.after, r.counted = r.body[:j], after, true
		}
	}
	return r
}

// leaseTrust is how a lease value stands with the reader's key.
type leaseTrust int

const (
	leaseSigned   leaseTrust = iota // signed with the key (or no key to check with)
	leaseUnsigned                   // no signature: a worker from before it, or without a key; or forged
	leaseForeign                    // a signature the key did not make: forged, or a worker of the host on another seed
	leaseReplayed                   // signed with the key, but written after a revision older than floor: a copy written again
)

// trustLease returns the instance v names and how it stands with k: with
// no key nothing can be checked, and every value is taken as before. A
// value the key signed is a copy written again (leaseReplayed) when it
// was written after a revision below floor, a revision of the key the
// reader knows was legitimately written (0: none), or, with counted,
// when it carries no revision at all (a value from before leaseValue
// had one, copied, or a worker of the host from before it).
func trustLease(key string, v []byte, k MarkKey, floor uint64, counted bool) (leaseRead, leaseTrust) {
	r := parseLease(v)
	switch {
	case k == nil:
		return r, leaseSigned
	case r.sig == "":
		return r, leaseUnsigned
	case !hmac.Equal([]byte(r.sig), []byte(k.signLease(key, "held", r.body))):
		return r, leaseForeign
	case r.counted && r.after < floor, !r.counted && counted:
		return r, leaseReplayed
	}
	return r, leaseSigned
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
	q        *Queue // learns what it sees (leaseKnown); nil: nobody
	key      string // lease.<host>
	host     string
	instance string // the standby's
	k        MarkKey
	signed   bool   // a value k signed was seen
	counted  bool   // a value k signed with the revision it was written after was seen
	floor    uint64 // the revision of the last such value honoured
	holder   string // the instance of the last value honoured
	held     bool   // another instance held the lease lately (leaseKnown)
	logged   bool   // forged has logged
}

// honours reports whether the value v, stored as revision rev of the key,
// is its holder's, and which instance it names. A copy of a value its
// holder signed, written again, is not: it names a revision below the
// last one honoured (trustLease), as a live holder's next value never
// does (it is written after that revision, or after a later one it
// read), so a dead holder's last renewal copied over and over no longer
// keeps its standby waiting. One taken before any value with a revision
// was honoured (at the start, a copy found first) raises the floor to
// its own revision, and the holder's next write, which reads the key
// when its conditioned update fails, names that revision or a later one.
func (s *leaseSeen) honours(v []byte, rev uint64) (string, bool) {
	if rev < s.floor {
		// Revisions only grow, copies' too: the bucket was made again
		// (by hand, or a server that lost its store), and its values
		// name the new bucket's revisions.
		s.floor = 0
	}
	r, t := trustLease(s.key, v, s.k, s.floor, s.counted)
	if t == leaseReplayed && rev != 0 && rev == s.floor {
		// The very value that raised the floor, read again (the next
		// read, or the watch's first delivery, of a dead holder's last
		// renewal): a copy is stored at a revision of its own. Judged a
		// copy, a worker restarted at once logged that another
		// credential wrote its own host's lease (decisions.md, hI21).
		t = leaseSigned
	}
	switch {
	case t == leaseSigned:
		var learned leaseFacts
		if s.k != nil && !s.signed {
			s.signed = true
			learned |= knowsSigned
		}
		if s.k != nil && r.counted {
			if !s.counted {
				learned |= knowsCounted
			}
			s.counted, s.floor = true, max(s.floor, rev)
		}
		if learned != 0 && s.q != nil {
			s.q.learnLease(s.host, learned)
		}
	case t == leaseUnsigned && !s.signed:
	default:
		return r.instance, false
	}
	s.holder = r.instance
	if r.instance != s.instance && !s.held {
		s.held = true
		if s.q != nil {
			s.q.learnLease(s.host, knowsHeld)
		}
	}
	return r.instance, true
}

// leaseKnown is what this process has learned of a host's lease, kept in
// its Queue across its waits (AcquireSignedLease) and tenures (learned),
// and the mark a release of its own left on the key (yielded). Each of
// its writers changes only what it is about (changeLease): the three
// facts were once merged field by field beside the mark, each writer
// spelling out the whole struct again, where the next field would have
// been forgotten (docs/decisions.md, hD26).
type leaseKnown struct {
	learned leaseFacts
	// yielded: the instance of this process that left its value on the
	// key to the host's owner (Queue.yielded); "" for none.
	yielded string
	// unread: the host's owner could not be read before the next wait
	// (OwnerUnread); that wait's own read of it decides.
	unread bool
}

// leaseFacts is what this process learned of a host's lease, facts that
// stay learned: learning one more is a union (learnLease). Learned by one
// wait only, they were forgotten whenever the wait ended without the
// host (a try the NATS server did not answer, a frozen server's silence,
// a holder that lost the host and waits again): the next wait honoured
// another credential's unsigned values as an older holder's renewals, as
// a standby does during a rolling upgrade, and waited for as long as they
// came (TestFaultsNATSFrozenSigned: 28 s with the holder alive, the host
// running nothing for 22 s). The revision floor is not kept: a hosts
// bucket made again starts its revisions anew.
type leaseFacts uint8

const (
	// knowsSigned: a value the host's key signed was seen or written.
	// From then on a standby of the host honours no value without it.
	knowsSigned leaseFacts = 1 << iota
	// knowsCounted: one naming the revision it was written after was
	// seen or written, and from then on is required as well.
	knowsCounted
	// knowsHeld: another instance held the host's lease lately
	// (HeldElsewhere, or a value of another instance honoured): a key
	// found absent may be its live lease, gone from the server's store
	// (absentUnseen). This process's own take of the lease forgets it
	// (tookLease): the last holder it knows of is then itself.
	knowsHeld
)

// has reports whether every fact of g is among f.
func (f leaseFacts) has(g leaseFacts) bool { return f&g == g }

// knownLease is what this process learned of host's lease.
func (q *Queue) knownLease(host string) leaseKnown {
	v, _ := q.leases.Load(host)
	k, _ := v.(leaseKnown)
	return k
}

// changeLease applies change to what this process knows of host's lease,
// one change at a time: two instances of a host sharing the Queue (a
// standby beside its holder, as tests run them), one waiting and one
// releasing, each read the whole and stored it back, and either could
// store over the other's change.
func (q *Queue) changeLease(host string, change func(*leaseKnown)) {
	q.leasesMu.Lock()
	defer q.leasesMu.Unlock()
	k := q.knownLease(host)
	change(&k)
	q.leases.Store(host, k)
}

// learnLease records the facts f learned of host's lease.
func (q *Queue) learnLease(host string, f leaseFacts) {
	q.changeLease(host, func(k *leaseKnown) { k.learned |= f })
}

// tookLease records that instance, of this process, took host's lease,
// signed with k (nil: none): what it writes is signed and counted; the
// last holder this process knows of is itself, not one it saw before
// (knowsHeld), so that a key found absent after its tenure (its release
// refused or unanswered, and its last renewal expired) is its own, not
// another's live lease: a worker of a host with a standby, which had
// once waited for the other, left its own expired key to "another"
// holder for a lease after every tenure whose release did not take
// (TestFaultsFleet, docs/decisions.md, hF25;
// TestWorkerTakesItsOwnExpiredLeaseAtOnce). A value this instance left
// on the key to the host's owner (yielded) is its own again.
func (q *Queue) tookLease(host, instance string, k MarkKey) {
	q.changeLease(host, func(kn *leaseKnown) {
		if k != nil {
			kn.learned |= knowsSigned | knowsCounted
		}
		kn.learned &^= knowsHeld
		if kn.yielded == instance {
			kn.yielded = ""
		}
	})
}

// OwnerUnread records that the worker could not read host's owner
// before its next wait (PostgreSQL did not answer in time): rather than
// guess that another instance owns it, the wait judges a key it finds
// absent by the owner it reads before its take (AcquireOwnedLease). The
// guess left a worker's own expired key to "another" holder for a lease
// (TestFaultsFleet, docs/decisions.md, hF25). Without owners to read,
// the wait takes the owner to be another, as the guess did.
func (q *Queue) OwnerUnread(host string) {
	q.changeLease(host, func(kn *leaseKnown) { kn.unread = true })
}

// HeldElsewhere records that another worker instance held host's lease
// lately, as PostgreSQL says (the host's owner): a wait of this process
// that finds the lease key absent, with no release stored, then leaves it
// to that holder for a lease before taking it (absentUnseen). A new
// process knows nothing of the host otherwise, and took an absent key at
// once.
func (q *Queue) HeldElsewhere(host string) { q.learnLease(host, knowsHeld) }

// released reports whether the delete m of the key, stored as revision
// rev (0: unknown), is its holder's release (Release): it names the
// instance that released it in ReleasedHeader, and with a key, that
// instance's signature is in ReleaseSignatureHeader and it is the holder
// last honoured, if any (a release of an earlier holder, copied, is no
// release of this one). Any other delete is someone else's, as a delete by
// hand is.
//
// A holder keeps its instance across its tenures (it loses its host and
// takes it again), so its release of an earlier tenure, copied onto the
// key, was a release of the live holder: its standby took the host at
// once, and its takeover interrupted the order the holder ran
// (TestStandbyLeavesACopiedReleaseOfAnEarlierTenure). So a release also
// names the revision it deletes after, signed with it
// (ReleasedAfterHeader), and counts only at or past the floor, the last
// renewal honoured, as a value does (trustLease). A release without it
// (a worker from before it) counts only while no value with a revision
// was seen: its holder is from before it too.
func (s *leaseSeen) released(m *nats.Msg, rev uint64) bool {
	by := m.Header.Get(ReleasedHeader)
	if by == "" || s.k == nil {
		return by != ""
	}
	sig := m.Header.Get(ReleaseSignatureHeader)
	if !hmac.Equal([]byte(sig), []byte(s.k.signLease(s.key, "released", by))) {
		return false
	}
	if s.holder != "" && s.holder != by {
		return false
	}
	h := m.Header.Get(ReleasedAfterHeader)
	if h == "" {
		return !s.counted
	}
	after, sig, found := strings.Cut(h, " ")
	n, err := strconv.ParseUint(after, 10, 64)
	if !found || err != nil || !hmac.Equal([]byte(sig), []byte(s.k.signLease(s.key, "released", by+"\n"+after))) {
		return false
	}
	floor := s.floor
	if rev != 0 && rev < floor {
		floor = 0 // the bucket was made again (honours)
	}
	return n >= floor
}

// ReleasedAfterHeader carries, on a release's delete, the key's revision
// the release deletes after and, after a space, the signature of the
// instance and that revision (leaseSeen.released). Workers from before it
// read the release by ReleasedHeader and ReleaseSignatureHeader, which
// it leaves as they were.
const ReleasedAfterHeader = "Orderly-Released-After"

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

// goneUnseen says what a standby finds at a try, without having seen
// it happen, that leaves the lease key to a holder that may still live:
// "delete" when the key's last message is a delete that is not a release
// of its holder (leaseSeen.released), or an expiry marker in a bucket
// that makes none (hostsStream), judged with the host's key only; its
// Create took such a key at once, and a delete another credential stored
// as the standby started handed it a live holder's host. "absent" when
// the key has no message at all while another instance held the lease
// lately (leaseSeen.held): a server clock stepped forward past the lease
// (nats-server ages messages by its wall clock and removes them with no
// marker), a hosts bucket deleted and made again, or an API's purge, each
// remove a live holder's key, which it puts back at its next renewal
// (Renew); a wait that began in between took the key at once, and its
// takeover interrupted the order the holder ran
// (TestStandbyStartingOnAnAbsentKeyLeavesItToItsHolder). "value" when
// the key holds a put (its holder's or not, judged by the read that
// follows): no Create is sent on it, which would fail while it stands
// and succeed only if the key vanished after this look, and a standby
// that looked as its holder put the key back, then wrote after a purge
// or a clock step removed it again, took a live holder's host
// (TestStandbyLeavesAKeyThatVanishesBeforeItsCreate). "" otherwise: a
// release, an absent key nobody else held, or one it cannot read.
func (q *Queue) goneUnseen(ctx context.Context, key string, seen *leaseSeen) string {
	if seen.k == nil && !seen.held {
		return ""
	}
	m, st, err := q.lastMessageOf(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound) && seen.held:
		return "absent"
	case err != nil:
		return ""
	case m.Header.Get("KV-Operation") == "" && m.Header.Get(jetstream.MarkerReasonHeader) == "":
		return "value"
	case seen.k == nil:
		return ""
	}
	switch {
	case m.Header.Get("KV-Operation") == "DEL", m.Header.Get(jetstream.MarkerReasonHeader) == "Remove":
		if !seen.released(&nats.Msg{Header: m.Header}, m.Sequence) {
			return "delete"
		}
	case m.Header.Get("KV-Operation") == "PURGE", m.Header.Get(jetstream.MarkerReasonHeader) != "":
		// The bucket's limits as last read (lastMessageOf): an API
		// that turned its markers off since is read at this process's
		// next read of the stream (a standby's every half lease, a
		// holder's every minute).
		if st.CachedInfo().Config.SubjectDeleteMarkerTTL == 0 {
			return "delete"
		}
	}
	return ""
}
