package queue

import (
	"encoding/json"
	"testing"
	"time"
)

// BenchmarkClaimMarkSignature is what the signature adds to a claim
// mark's write and read, without NATS: signing the mark and checking it
// as read (MarkKey).
func BenchmarkClaimMarkSignature(b *testing.B) {
	k := NewMarkKey([]byte("seed"))
	m := ClaimMark{Seq: 123456, Stored: time.Now(), Attempt: 1}
	for b.Loop() {
		val, err := json.Marshal(signedMark{ClaimMark: m, Sig: k.sign("claimed.h1", m)})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := decodeClaimMark("claimed.h1", val, k); err != nil {
			b.Fatal(err)
		}
	}
}
