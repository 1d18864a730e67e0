package api_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/orderly-run/orderly/api"
)

// TestHostsListsAHostNoWorkerServed: orders for a host no worker ever
// served (a typo) wait for good, and the fleet gauges count that host
// offline (OrderlyHostOfflineWithQueuedOrders, OrderlyFleetHostsOffline
// fire for it), but GET /v1/hosts and `orderly hosts` did not list it:
// the operator the alert sent there found every host online. It is
// listed, offline, with its queue, while its orders wait.
func TestHostsListsAHostNoWorkerServed(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	e.submit("alice", map[string]any{"host": "wbe-1", "command": "true"}, "", http.StatusAccepted)
	code, body := e.do("admin", http.MethodGet, "/v1/hosts", nil)
	var list struct{ Hosts []api.Host }
	if err := json.Unmarshal(body, &list); code != http.StatusOK || err != nil {
		t.Fatalf("hosts: %d %s", code, body)
	}
	for _, h := range list.Hosts {
		if h.Host == "wbe-1" {
			if h.Online || h.LastSeen != nil || h.QueueDepth == nil || *h.QueueDepth != 1 {
				t.Fatalf("the unserved host is listed as %s", body)
			}
			return
		}
	}
	t.Fatalf("a host with an order waiting and no worker is not listed: %s", body)
}
