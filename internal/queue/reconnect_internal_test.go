package queue

import (
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// TestRefusedCredentialBacksOff: a connection whose credential the server
// stops accepting (a worker's host taken out of serve's nats.workers, its
// user out of a cluster's auth.conf) used to try again every
// ReconnectWait for as long as it ran, each try an authentication error
// in the server's log, about four a second. Connect's reconnect delay now
// doubles while the server refuses the credential, up to
// RefusedReconnectWait, stays at ReconnectWait for any other failure, and
// the connection is back once its user is accepted again.
func TestRefusedCredentialBacksOff(t *testing.T) {
	opts := func(users ...string) *server.Options {
		o := &server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true}
		for _, u := range users {
			o.Users = append(o.Users, &server.User{Username: u, Password: u + "-secret"})
		}
		return o
	}
	o := opts("worker", "other")
	ns, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	u, err := url.Parse(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("worker", "worker-secret")
	nc, err := Connect(u.String(), "backoff-test", nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)

	delay := nc.Opts.CustomReconnectDelayCB
	if delay == nil {
		t.Fatal("Connect set no reconnect delay: a refused credential is tried again every ReconnectWait")
	}
	if d := delay(8); d < ReconnectWait || d >= ReconnectWait+reconnectJitter {
		t.Fatalf("delay after 8 failed rounds, not refused = %v, want ReconnectWait (%v) and its jitter", d, ReconnectWait)
	}

	// Revoke the user: the server cuts the connection and refuses it since.
	ro := opts("other")
	ro.Port = o.Port
	if err := ns.ReloadOptions(ro); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !errors.Is(nc.LastError(), nats.ErrAuthorization) {
		if time.Now().After(deadline) {
			t.Fatalf("connection not refused after its user was removed: status %v, last error %v", nc.Status(), nc.LastError())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d := delay(1); d < ReconnectWait || d >= ReconnectWait+reconnectJitter {
		t.Fatalf("delay after the first refused round = %v, want ReconnectWait (%v) and its jitter", d, ReconnectWait)
	}
	if d := delay(3); d < 4*ReconnectWait || d >= 4*ReconnectWait+reconnectJitter {
		t.Fatalf("delay after 3 refused rounds = %v, want 4×ReconnectWait and its jitter", d)
	}
	for _, rounds := range []int{6, 100, 1 << 20} {
		if d := delay(rounds); d < RefusedReconnectWait || d >= RefusedReconnectWait+reconnectJitter {
			t.Fatalf("delay after %d refused rounds = %v, want RefusedReconnectWait (%v) and its jitter", rounds, d, RefusedReconnectWait)
		}
	}

	// Listed again: the connection is back (within RefusedReconnectWait).
	ro = opts("worker", "other")
	ro.Port = o.Port
	if err := ns.ReloadOptions(ro); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(60 * time.Second)
	for !nc.IsConnected() {
		if time.Now().After(deadline) {
			t.Fatalf("connection not back after its user was listed again: status %v, last error %v", nc.Status(), nc.LastError())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
