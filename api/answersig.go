package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
)

// SignatureHeader carries the signature of an answer on Orderly-Reply.
//
// Anything that may make a request on the bus can have the answer sent to
// a subject of its choosing, whatever its publish permissions: the server
// answers a direct get, a consumer's next message or a push consumer's
// delivery on the request's reply (or deliver) subject unchecked. A
// worker's seed, which reads its own keys with direct gets and writes
// them, so delivers bytes of its choosing to a submitter's reply subject,
// shaped as the API's answer (security.md, "Known gaps of a stolen worker
// seed"). NATS permissions cannot forbid it within one account, so the
// answer proves where it comes from instead: an HMAC keyed by the
// submission's Authorization header, which only the submitter and the API
// read.
const SignatureHeader = "Orderly-Signature"

// ErrUnsignedAnswer and ErrForgedAnswer are VerifyAnswer's refusals.
var (
	ErrUnsignedAnswer = errors.New("the answer carries no " + SignatureHeader + " header: not orderly's API's answer (or one of an API from before 2026-12-06)")
	ErrForgedAnswer   = errors.New("the answer's " + SignatureHeader + " does not match: not orderly's API's answer to this submission")
)

// answerSignature is the hex HMAC-SHA256, keyed by authorization, of the
// answer's reply subject, its Nats-Msg-Id values (joined by commas), its
// Idempotent-Replayed value and its body, each part but the body followed
// by a newline. The subject binds it to the reply subject it was
// published on: a push consumer's delivery keeps the subject its message
// was stored under.
func answerSignature(authorization, subject string, h nats.Header, body []byte) string {
	mac := hmac.New(sha256.New, []byte(authorization))
	for _, part := range []string{subject, strings.Join(h.Values("Nats-Msg-Id"), ","), h.Get(replayedHeader)} {
		mac.Write([]byte(part))
		mac.Write([]byte{'\n'})
	}
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

// VerifyAnswer reads the answer m to a NATS submission sent with the
// Authorization header authorization (the whole value, "Bearer …"), and
// refuses one the API did not sign for it: a submitter takes only the
// answers VerifyAnswer accepts.
func VerifyAnswer(authorization string, m *nats.Msg) (IntakeAnswer, error) {
	var a IntakeAnswer
	got := m.Header.Get(SignatureHeader)
	if got == "" {
		return a, ErrUnsignedAnswer
	}
	want := answerSignature(authorization, m.Subject, m.Header, m.Data)
	if !hmac.Equal([]byte(got), []byte(want)) {
		return a, ErrForgedAnswer
	}
	if err := json.Unmarshal(m.Data, &a); err != nil {
		return a, fmt.Errorf("read the answer: %w", err)
	}
	return a, nil
}
