package queue

import (
	"encoding/json"
	"testing"
	"time"
)

// BenchmarkClaimMarkSignature is what the signature adds to a claim
// mark's write and read, without NATS: the signature alone (a write
// signs the new mark and checks the one it replaces, a read checks one),
// and a mark encoded signed and decoded with its check, as a write and a
// read do besides their round trips to NATS.
func BenchmarkClaimMarkSignature(b *testing.B) {
	k := NewMarkKey([]byte("seed"))
	m := ClaimMark{Seq: 123456, Stored: time.Now(), Attempt: 1}
	b.Run("sign", func(b *testing.B) {
		for b.Loop() {
			k.sign("claimed.h1", m)
		}
	})
	b.Run("encode and decode", func(b *testing.B) {
		for b.Loop() {
			val, err := json.Marshal(signedMark{ClaimMark: m, Sig: k.sign("claimed.h1", m)})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := decodeClaimMark("claimed.h1", val, k); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode and decode unsigned", func(b *testing.B) {
		for b.Loop() {
			val, err := json.Marshal(signedMark{ClaimMark: m})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := decodeClaimMark("claimed.h1", val, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
