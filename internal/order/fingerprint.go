package order

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"slices"
)

// Fingerprint is the SHA-256 of what an order asks for: kind, host,
// command, arguments, environment, stdin, output handling, timeout, user,
// flags, output cap and correlation id. A retry with the same
// Idempotency-Key must ask for the same thing, or it is refused
// (CodeIdempotencyReused) instead of silently answered with another order.
// The deadline is left out: expires_in_seconds is relative to each
// attempt's arrival, so honest retries differ there. Each field is written
// with its length, so no two different orders share an encoding.
//
// It is the stored form of keys recorded before RequestSum: it holds
// what the server filled in (the default timeout, an action's timeout,
// user and param defaults), so a reload between a request and its retry
// made the retry differ. Kept only to compare such keys with.
func (o *Order) Fingerprint() []byte {
	h := sha256.New()
	o.writeFingerprint(h)
	return h.Sum(nil)
}

// RequestSumVersion is the first byte of a RequestSum: a stored
// request_sha256 of 32 bytes is a Fingerprint (keys recorded before),
// one of 33 starting with it is a RequestSum.
const RequestSumVersion = 2

// requestSumTag starts what a RequestSum hashes, so that no RequestSum
// is a Fingerprint's hash with a byte in front.
const requestSumTag = "orderly request v2"

// RequestSum is what an idempotency key binds: the request as the client
// sent it, normalized (kind "" is exec; env and params sorted), taken
// before the server fills anything in from its configuration. Called on
// an order as its handler built it, so a timeout it names none of is 0,
// an action's params are those sent (defaults not filled in, secrets left
// out) and its user and timeout are the client's. A reload that changes
// a default between a request and its retry therefore leaves the retry
// the same request, answered with the first order. It is RequestSumVersion
// followed by a SHA-256.
func (o *Order) RequestSum() []byte {
	req := *o
	if req.Kind == "" {
		req.Kind = KindExec
	}
	h := sha256.New()
	h.Write([]byte(requestSumTag))
	req.writeFingerprint(h)
	return h.Sum([]byte{RequestSumVersion})
}

// IsRequestSum reports whether a stored sum is a RequestSum (else it is
// a Fingerprint, recorded before RequestSum existed).
func IsRequestSum(sum []byte) bool {
	return len(sum) == 1+sha256.Size && sum[0] == RequestSumVersion
}

func (o *Order) writeFingerprint(h hash.Hash) {
	var n [8]byte
	field := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	str := func(s string) { field([]byte(s)) }
	num := func(v int64) {
		binary.BigEndian.PutUint64(n[:], uint64(v))
		h.Write(n[:])
	}
	flag := func(b bool) {
		if b {
			num(1)
		} else {
			num(0)
		}
	}
	// pairs writes a map's entries sorted by key, so that the same map
	// always hashes the same.
	pairs := func(m map[string]string) {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		num(int64(len(keys)))
		for _, k := range keys {
			str(k)
			str(m[k])
		}
	}
	str(string(o.Kind))
	str(o.Host)
	str(o.Command)
	num(int64(len(o.Args)))
	for _, a := range o.Args {
		str(a)
	}
	pairs(o.Env)
	field(o.Stdin)
	str(string(o.StdoutEncode))
	str(string(o.StderrEncode))
	flag(o.CaptureStdout)
	flag(o.CaptureStderr)
	num(int64(o.Timeout))
	str(o.RunAs)
	flag(o.DryRun)
	flag(o.Idempotent)
	num(o.MaxOutput)
	str(o.CorrelationID)
	if a := o.Action; a != nil {
		// Secret values are left out: the fingerprint is stored, and a
		// hash of a short secret can be guessed back.
		str(a.Name)
		pairs(a.Params)
	}
}
