package api

import (
	"strings"
	"testing"

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
