package api_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
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

// TestUIPagesDoNotCallAHostOfflineWithNATSFrozen (no browser): with
// nats-server frozen, neither the hosts page nor the page of an order
// web-1's worker runs says web-1 is offline: the listing is PostgreSQL's
// ("registry": "unavailable") and whether a worker is online is
// unknown. Before, the hosts page showed every host "offline" and the
// run page said the worker was offline and the order's fate unknown,
// the fleet seemingly down while NATS was merely slow to answer.
func TestUIPagesDoNotCallAHostOfflineWithNATSFrozen(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	fz := newFreezer(t, ns.Addr().String())
	e := newUIEnvWith(t, testenv.Postgres(t), "nats://"+fz.addr())
	sess, csrf := e.uiSession(t, "alice")
	loc := e.exec(t, sess, url.Values{"csrf": {csrf}, "host": {"web-1"}, "command": {"sleep"}, "args": {"30"}})
	// Stopped once NATS carries again (deferred first, run last).
	defer e.postForm(loc+"/cancel", url.Values{"csrf": {csrf}, "signal": {"SIGKILL"}}, sess)
	e.waitPage(t, sess, loc, `badge running`, "the order to run")
	// The worker's first heartbeat goes beside its takeover (the
	// tenure's beat), not before its first order: on a loaded machine
	// the order ran before the heartbeat was in, and the hosts page
	// read once said offline (hH24). Waited for, then both pages.
	e.waitPage(t, sess, "/ui/hosts", `>online</span>`, "web-1 online on the hosts page, with NATS up")
	if page := e.page(t, sess, loc); strings.Contains(page, "is offline") {
		t.Fatalf("with NATS up, the run page of an order web-1's worker runs says the host is offline:\n%s", page)
	}
	fz.freeze()
	defer fz.thaw()
	if page := e.page(t, sess, "/ui/hosts"); !strings.Contains(page, ">web-1<") || strings.Contains(page, `>offline</span>`) {
		t.Errorf("with NATS frozen, the hosts page shows web-1 offline (its state is unknown):\n%s", page)
	} else if !strings.Contains(page, "online unknown") {
		t.Errorf("with NATS frozen, the hosts page does not say web-1's state is unknown:\n%s", page)
	}
	if page := e.page(t, sess, loc); strings.Contains(page, "is offline") || strings.Contains(page, "is online") {
		t.Errorf("with NATS frozen, the run page says web-1's worker is offline (its state is unknown):\n%s", page)
	}
}
