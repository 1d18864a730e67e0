package api_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/queue"
)

// TestNATSAnswerFitsWhatTheSubmissionDid: a submission whose arguments
// are full of <, > and & (a shell script's redirections), within the
// limits and the NATS message size, is answered. The answer escaped each
// as six bytes (json.Marshal, where REST writes them as they are), grew
// past what a NATS message may carry, and the accepted order went
// unanswered.
func TestNATSAnswerFitsWhatTheSubmissionDid(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	arg := `"` + strings.Repeat("<&>", (64<<10)/3) + `"`
	body := `{"command":"echo","args":[` + strings.Repeat(arg+",", 3) + arg + `]}`
	nc, inbox, sub := replyInbox(t, e.natsURL)
	m := nats.NewMsg(queue.SubmitSubject + "nhtml")
	m.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
	m.Header.Set("Orderly-Reply", inbox)
	m.Data = []byte(body)
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	reply, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no answer to a %d-byte submission: %v", len(body), err)
	}
	var a api.IntakeAnswer
	if err := json.Unmarshal(reply.Data, &a); err != nil {
		t.Fatal(err)
	}
	if a.Order == nil || len(a.Order.Args) != 4 || a.Order.Args[0] != arg[1:len(arg)-1] {
		t.Fatalf("answer %.200s", reply.Data)
	}
	if strings.Contains(string(reply.Data), `\u003c`) {
		t.Errorf("the answer escapes < as REST does not: %.100s", reply.Data)
	}
}

// TestNATSRetryOfACanceledOrderSaysWhoCanceled: a NATS retry is answered
// with the order as GET /v1/orders/{id} shows it, its cancel request
// included, as REST's retry of the same order is.
func TestNATSRetryOfACanceledOrderSaysWhoCanceled(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	body := map[string]any{"command": "true"}
	first := e.publish("alice", "ncancel", "cancel-1", body)
	if first.Order == nil {
		t.Fatalf("first answer: %+v (error %+v)", first, first.Error)
	}
	if code, b := e.do("alice", "POST", "/v1/orders/"+first.Order.ID.String()+"/cancel", nil); code != 200 {
		t.Fatalf("cancel: %d %s", code, b)
	}
	// Past the submit stream's 100 ms duplicate window.
	time.Sleep(200 * time.Millisecond)
	again := e.publish("alice", "ncancel", "cancel-1", body)
	if again.Order == nil || again.Order.ID != first.Order.ID || again.Order.Status != "canceled" {
		t.Fatalf("the retry's answer: %+v (error %+v)", again.Order, again.Error)
	}
	if again.Order.Cancel == nil || again.Order.Cancel.Actor != "alice" {
		t.Fatalf("the retry's answer says nothing of the cancel: %+v", again.Order.Cancel)
	}
}

// TestNATSHeaderInAnotherCase: NATS header names are case-sensitive, so a
// nats-msg-id (or an Idempotency-Key, REST's name) was not read: the
// publisher's retry was taken for a new submission and ran again. Such a
// submission is refused, naming the header to send, and runs nothing;
// an orderly-reply in another case still gets that answer.
func TestNATSHeaderInAnotherCase(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	nc, err := nats.Connect(e.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, c := range []struct{ name, want string }{
		{"nats-msg-id", "send Nats-Msg-Id"},
		{"NATS-MSG-ID", "send Nats-Msg-Id"},
		{"Idempotency-Key", "Nats-Msg-Id header"},
		{"authorization", "send Authorization"},
		{"orderly-reply", "send Orderly-Reply"},
	} {
		inbox := nats.NewInbox()
		sub, err := nc.SubscribeSync(inbox)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(queue.SubmitSubject + "ncase")
		m.Header = nats.Header{"Authorization": {"Bearer " + e.tokens["alice"]}, "Orderly-Reply": {inbox}}
		if c.name == "orderly-reply" {
			delete(m.Header, "Orderly-Reply")
		}
		m.Header[c.name] = []string{map[bool]string{true: inbox, false: "retry-1"}[c.name == "orderly-reply"]}
		m.Data = []byte(`{"command":"true"}`)
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		reply, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("%s: no answer: %v", c.name, err)
		}
		var a api.IntakeAnswer
		if err := json.Unmarshal(reply.Data, &a); err != nil || a.Error == nil || a.Error.Code != "invalid_request" ||
			!strings.Contains(a.Error.Message, c.want) {
			t.Fatalf("%s: answer %s, want invalid_request saying %q", c.name, reply.Data, c.want)
		}
		_ = sub.Unsubscribe()
	}
	// Two at once: the refusal names the first in sorted order each time
	// (it named whichever a map gave first), and still reaches the
	// orderly-reply it does not name.
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		m := nats.NewMsg(queue.SubmitSubject + "ncase")
		m.Header = nats.Header{"Authorization": {"Bearer " + e.tokens["alice"]}, "orderly-reply": {inbox},
			"nats-msg-id": {fmt.Sprintf("two-%d", i)}}
		m.Data = []byte(`{"command":"true"}`)
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		reply, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("two mis-cased headers, try %d: no answer: %v", i, err)
		}
		var a api.IntakeAnswer
		if err := json.Unmarshal(reply.Data, &a); err != nil || a.Error == nil ||
			!strings.Contains(a.Error.Message, "header nats-msg-id is not read") {
			t.Fatalf("two mis-cased headers, try %d: answer %s, want the refusal of nats-msg-id", i, reply.Data)
		}
	}
	var n int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM orders WHERE host = 'ncase'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d orders recorded for submissions that were refused (%v)", n, err)
	}
}

// TestNATSAnswerCarriesItsMsgID: a service with many submissions in
// flight on one reply subject matches each answer to its submission by
// the Nats-Msg-Id it sent, which the answer carries as sent: an
// accepted one, a refused one, and a retry (marked Idempotent-Replayed,
// the first answer not). The answers carried no header, and the order
// id is the stored message's, which the publisher does not know.
func TestNATSAnswerCarriesItsMsgID(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	nc, inbox, sub := replyInbox(t, e.natsURL)
	send := func(id, token string, body string) *nats.Msg {
		t.Helper()
		m := nats.NewMsg(queue.SubmitSubject + "nmsgid")
		m.Header.Set("Authorization", "Bearer "+token)
		m.Header.Set("Orderly-Reply", inbox)
		if id != "" {
			m.Header.Set("Nats-Msg-Id", id)
		}
		m.Data = []byte(body)
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		reply, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("no answer to %q: %v", id, err)
		}
		return reply
	}
	ok := `{"command":"true"}`
	for _, c := range []struct {
		id, token, body, replayed string
		accepted                  bool
	}{
		{"msgid-ok-1", e.tokens["alice"], ok, "", true},
		{"msgid-bad-token", "nope", ok, "", false},
		{"msgid-bad-body", e.tokens["alice"], `{"command":`, "", false},
		{"msgid-ok-2", e.tokens["alice"], ok, "", true},
		{"msgid-ok-1", e.tokens["alice"], ok, "true", true},
		{"", e.tokens["alice"], ok, "", true},
	} {
		if c.id == "msgid-ok-1" && c.replayed != "" {
			time.Sleep(200 * time.Millisecond) // past the submit stream's duplicate window
		}
		reply := send(c.id, c.token, c.body)
		var a api.IntakeAnswer
		if err := json.Unmarshal(reply.Data, &a); err != nil {
			t.Fatal(err)
		}
		if got := reply.Header.Values("Nats-Msg-Id"); c.id == "" && len(got) != 0 || c.id != "" && (len(got) != 1 || got[0] != c.id) {
			t.Errorf("answer to %q carries Nats-Msg-Id %q", c.id, got)
		}
		if (a.Order != nil) != c.accepted || reply.Header.Get("Idempotent-Replayed") != c.replayed {
			t.Errorf("answer to %q: %s, Idempotent-Replayed %q; want accepted %v, %q", c.id, reply.Data,
				reply.Header.Get("Idempotent-Replayed"), c.accepted, c.replayed)
		}
	}
}
