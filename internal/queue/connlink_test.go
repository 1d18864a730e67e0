package queue_test

import (
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestServerNamedWithoutTheURLsCredentials: nats.url may carry the
// connection's token (nats://TOKEN@host) or user and password
// (docs/config.md). What names the server in the log lines of a dropped
// and a restored connection (ConnLink) and in the refusal of
// nats.replicas says where, never with what: nats.go's
// ConnectedUrlRedacted hides a password only, and printed a token whole
// in every "nats disconnected" and "nats reconnected" line.
func TestServerNamedWithoutTheURLsCredentials(t *testing.T) {
	const secret = "Sec4etNATStoken"
	cases := []struct {
		name string
		opts *server.Options
		user string
	}{
		{"token", &server.Options{Authorization: secret}, secret + "@"},
		{"user and password", &server.Options{Username: "orderly", Password: secret}, "orderly:" + secret + "@"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ns := testenv.NATSServer(t, tc.opts)
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ns.Addr().(*net.TCPAddr).Port))
			nc, err := nats.Connect("nats://" + tc.user + addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			var link queue.ConnLink
			link.Connected(nc)
			if got := link.Dropped(); strings.Contains(got, secret) || !strings.Contains(got, addr) {
				t.Errorf("the dropped connection's server: %q; want %s without the credentials", got, addr)
			}
			_, err = queue.New(testenv.Context(t), nc, queue.Options{Replicas: 3})
			if err == nil || strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), addr) {
				t.Errorf("nats.replicas refused: %v; want %s named without the credentials", err, addr)
			}
		})
	}
}
