package api_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestUIActionHostsNotOfflineWithNATSFrozen (no browser): with
// nats-server frozen, the hosts listing is PostgreSQL's ("registry":
// "unavailable") and an action's host dropdown marks no host offline:
// whether a worker is online is unknown. Before, every host read
// "(offline)", the fleet seemingly down.
func TestUIActionHostsNotOfflineWithNATSFrozen(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	fz := newFreezer(t, ns.Addr().String())
	e := newUIEnvWith(t, testenv.Postgres(t), "nats://"+fz.addr())
	sess, _ := e.uiSession(t, "alice")
	// web-1's worker is online once its first heartbeat is in.
	testenv.WaitUntil(t, 30*time.Second, "web-1's worker online", func() bool {
		req := httptest.NewRequest("GET", "/v1/hosts/web-1", nil)
		req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
		rec := httptest.NewRecorder()
		e.handler.ServeHTTP(rec, req)
		var h api.Host
		return rec.Code == http.StatusOK && json.Unmarshal(rec.Body.Bytes(), &h) == nil && h.Online
	})
	if page := e.page(t, sess, "/ui/"); !strings.Contains(page, `>web-1</option>`) || strings.Contains(page, `>web-1 (offline)</option>`) {
		t.Fatalf("with NATS up, the dropdown does not list web-1 online:\n%s", page)
	}
	fz.freeze()
	defer fz.thaw()
	page := e.page(t, sess, "/ui/")
	if !strings.Contains(page, `>web-1</option>`) || strings.Contains(page, `(offline)</option>`) {
		t.Errorf("with NATS frozen, the dropdown marks hosts offline (their state is unknown):\n%s", page)
	}
}
