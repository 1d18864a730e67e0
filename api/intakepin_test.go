package api_test

import (
	"testing"
)

// TestNATSSubmissionCannotForgeThePin: a submission that carries its own
// Nats-Pin-Id, the header the server adds to every delivery of the
// pinned intake consumer, is refused, and the submissions after it are
// taken up. Read first, the forged value was taken for a new pin: the
// intake rewound, received it first again, and no NATS submission of any
// host was answered any more.
func TestNATSSubmissionCannotForgeThePin(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	// First of the intake's deliveries, then in the middle of them.
	for round := range 2 {
		a := e.publish("alice", "npin", "", map[string]any{"command": "true"}, "Nats-Pin-Id", "forged")
		if a.Error == nil || a.Error.Code != "invalid_request" || a.Error.Details["field"] != "Nats-Pin-Id" {
			t.Fatalf("round %d: a submission with its own Nats-Pin-Id: %+v (error %+v)", round, a, a.Error)
		}
		for _, host := range []string{"npin", "npin-2"} {
			if b := e.publish("alice", host, "", map[string]any{"command": "true"}); b.Order == nil {
				t.Fatalf("round %d: the next submission for %s: %+v (error %+v)", round, host, b, b.Error)
			}
		}
	}
}
