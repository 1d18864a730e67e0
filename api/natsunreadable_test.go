package api_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/queue"
)

// TestNATSSubmissionWithUnreadableHeaders: a header block nats.go cannot
// decode (a line without a colon, which the server stores as sent) is
// handed to the intake with no headers at all. It was refused as
// "missing Authorization header", which the publisher had sent, after
// two rewinds of the intake (its missing Nats-Pin-Id read as a new pin).
// It is refused for what it is, and the next submission is taken up.
func TestNATSSubmissionWithUnreadableHeaders(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	c, err := net.Dial("tcp", strings.TrimPrefix(e.natsURL, "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil { // INFO
		t.Fatal(err)
	}
	hdr := "NATS/1.0\r\nAuthorization: Bearer " + e.tokens["alice"] + "\r\nno colon here\r\n\r\n"
	body := `{"command":"true"}`
	fmt.Fprintf(c, "CONNECT {\"verbose\":false,\"headers\":true}\r\nHPUB %s %d %d\r\n%s%s\r\nPING\r\n",
		queue.SubmitSubject+"nbadhdr", len(hdr), len(hdr)+len(body), hdr, body)
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(l, "PONG") {
			break // stored: the server answers in order
		}
		if strings.HasPrefix(l, "-ERR") {
			t.Fatal(l)
		}
	}
	if a := e.publish("alice", "nbadhdr", "", map[string]any{"command": "true"}); a.Order == nil {
		t.Fatalf("the submission behind it: %+v", a.Error)
	}
	var code, reason string
	if err := e.pool.QueryRow(t.Context(), `SELECT code, reason FROM rejections
		WHERE source = 'nats' AND path = $1`, queue.SubmitSubject+"nbadhdr").Scan(&code, &reason); err != nil {
		t.Fatal(err)
	}
	if code != "invalid_request" || !strings.Contains(reason, "headers cannot be read") {
		t.Errorf("refused as %s: %s", code, reason)
	}
}
