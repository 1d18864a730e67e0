package api_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/queue"
)

// TestNATSSubmissionShapedAsAStatusIsRefused: a submission with an empty
// body and a Status header is, to nats.go's JetStream client, a status
// message of the server's: the intake never received it, so it was never
// answered nor acknowledged. One saying 409 "Consumer Deleted" ended the
// intake's iterator each time it came, and every NATS submission after
// it waited for good; one saying 404 held a slot of the consumer's
// MaxAckPending for good. Each is now refused on its Orderly-Reply and
// in rejections, as any empty body is, and the submissions behind it are
// taken up.
func TestNATSSubmissionShapedAsAStatusIsRefused(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	nc, inbox, _ := replyInbox(t, e.natsURL)
	sub, err := nc.SubscribeSync(inbox + ".>") // one reply subject per submission
	if err != nil {
		t.Fatal(err)
	}
	publish := func(reply string, hdr ...string) {
		t.Helper()
		m := nats.NewMsg(queue.SubmitSubject + "nstatus")
		for i := 0; i+1 < len(hdr); i += 2 {
			m.Header.Add(hdr[i], hdr[i+1])
		}
		m.Header.Set("Orderly-Reply", reply)
		// A JetStream publish: the submission is stored before the next.
		ack, err := nc.RequestMsg(m, 10*time.Second)
		if err != nil || !strings.Contains(string(ack.Data), `"seq"`) {
			t.Fatalf("publish: %v %s", err, ack.Data)
		}
	}
	publish(inbox+".deleted", "Authorization", "Bearer "+e.tokens["alice"], "Status", "409", "Description", "Consumer Deleted")
	publish(inbox+".nomsgs", "Status", "404")

	// The submission behind them is taken up and answered.
	m := nats.NewMsg(queue.SubmitSubject + "nstatus")
	m.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
	m.Header.Set("Orderly-Reply", inbox+".good")
	m.Data = []byte(`{"command":"true"}`)
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		inbox + ".deleted": "invalid_request",
		inbox + ".nomsgs":  "unauthenticated",
		inbox + ".good":    "",
	}
	for len(want) > 0 {
		reply, err := sub.NextMsg(time.Minute)
		if err != nil {
			t.Fatalf("no answer for %v: %v", want, err)
		}
		code, ok := want[reply.Subject]
		if !ok {
			t.Fatalf("a second answer on %s: %s", reply.Subject, reply.Data)
		}
		delete(want, reply.Subject)
		var a api.IntakeAnswer
		if err := json.Unmarshal(reply.Data, &a); err != nil {
			t.Fatal(err)
		}
		switch {
		case code == "" && a.Order == nil:
			t.Errorf("%s: no order: %s", reply.Subject, reply.Data)
		case code != "" && (a.Error == nil || string(a.Error.Code) != code):
			t.Errorf("%s: want %s, got %s", reply.Subject, code, reply.Data)
		}
	}
	var rows int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM rejections
		WHERE source = 'nats' AND path = $1 AND code IN ('invalid_request', 'unauthenticated')`,
		queue.SubmitSubject+"nstatus").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 2 {
		t.Errorf("%d rejections rows for the two refusals", rows)
	}
}
