package order

import (
	"crypto/sha256"
	"encoding/binary"
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
func (o *Order) Fingerprint() []byte {
	h := sha256.New()
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
	return h.Sum(nil)
}
