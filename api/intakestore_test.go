package api_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/internal/testenv"
)

// TestNATSIntakeAfterTheStoreIsLost: nats-server comes back with an empty
// store while the API runs. The API creates the streams again (here on
// /readyz, as an orchestrator's probe does), but nothing tells its NATS
// intake that the intake consumer is gone: its pulls only miss their
// heartbeats, which it took for a reconnect and ignored, so NATS
// submissions were captured and never taken, without a log line. The
// intake now asks the server about its consumer after a missed heartbeat
// and starts over, creating it again, when it is gone.
func TestNATSIntakeAfterTheStoreIsLost(t *testing.T) {
	first := testenv.NATSServer(t, &server.Options{})
	e := newAPIEnv(t, envOptions{natsURL: first.ClientURL()})
	if a := e.publish("alice", "wiped", "", map[string]any{"command": "true"}); a.Error != nil {
		t.Fatalf("before the loss: %+v", a.Error)
	}

	testenv.NATSServerLost(t, first)
	testenv.WaitUntil(t, 20*time.Second, "the API is ready again (streams created again)", func() bool {
		resp, err := http.Get(e.url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if a := e.publish("alice", "wiped", "", map[string]any{"command": "true"}); a.Error != nil {
		t.Fatalf("after the loss: %+v", a.Error)
	}
}
