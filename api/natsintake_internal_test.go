package api

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
)

// TestMiscasedHeaderIsDeterministic: of several headers of ours in
// another case, the refusal names the first in sorted order every time;
// it named whichever the map gave first. A mis-cased Orderly-Reply still
// gets the refusal when another header is the one named.
func TestMiscasedHeaderIsDeterministic(t *testing.T) {
	hdr := nats.Header{"orderly-reply": {"_INBOX.abc"}, "nats-msg-id": {"retry-1"}, "authorization": {"Bearer x"},
		"NATS-MSG-ID": {"retry-2"}, "Orderly-Reply-X": {"y"}, "Authorization": {"Bearer y"}}
	for range 200 {
		err := miscasedHeader(hdr)
		if err == nil || !strings.Contains(err.Error(), "header NATS-MSG-ID is not read") {
			t.Fatalf("miscasedHeader = %v, want the refusal of NATS-MSG-ID", err)
		}
		if r := miscasedReply(hdr); r != "_INBOX.abc" {
			t.Fatalf("miscasedReply = %q", r)
		}
	}
	hdr["Idempotency-Key"] = []string{"k"}
	if err := miscasedHeader(hdr); err == nil || !strings.Contains(err.Error(), "not Idempotency-Key") {
		t.Fatalf("miscasedHeader = %v, want the refusal of Idempotency-Key", err)
	}
	if err := miscasedHeader(nats.Header{"Authorization": {"x"}, "Nats-Msg-Id": {"1"}, "Orderly-Reply": {"_INBOX.a"}, "Other": {"o"}}); err != nil {
		t.Fatalf("well-cased headers refused: %v", err)
	}
}

// TestSubmissionIDIsTheMessages: the order id of a NATS submission is the
// same for every replica that takes its stored message up, differs
// between messages, and is a UUIDv7 of the time the stream stored it, so
// ids still sort by submission time.
func TestSubmissionIDIsTheMessages(t *testing.T) {
	at := time.Date(2026, 12, 3, 18, 0, 0, 123456789, time.UTC)
	id := submissionID(7, at)
	if id != submissionID(7, at) {
		t.Fatal("two ids for one message")
	}
	if id == submissionID(8, at) || id == submissionID(7, at.Add(time.Nanosecond)) {
		t.Fatal("one id for two messages")
	}
	if id.Version() != 7 || id.Variant() != uuid.RFC4122 {
		t.Fatalf("%s is not a UUIDv7", id)
	}
	if sec, nsec := id.Time().UnixTime(); time.Unix(sec, nsec).UnixMilli() != at.UnixMilli() {
		t.Fatalf("%s is of %s, not %s", id, time.Unix(sec, nsec).UTC(), at)
	}
	prev := submissionID(1000, at)
	for i := 1; i < 2000; i++ {
		next := submissionID(uint64(1000-i), at.Add(time.Duration(i)*250*time.Nanosecond))
		if bytes.Compare(prev[:], next[:]) >= 0 {
			t.Fatalf("the id of a message stored %d ns later sorts first", 250*i)
		}
		prev = next
	}
}
