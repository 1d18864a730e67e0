package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/queue"
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

// TestHostsShowStandby: a worker waiting for a host's lease was invisible
// in GET /v1/hosts and `orderly hosts`: an operator could not tell
// whether stopping a host's worker hands the host to another one or
// leaves it offline. The list and the host show the standby's report;
// one naming the worker that holds the host (the last report of a
// standby that has just taken over) is not a standby.
func TestHostsShowStandby(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	ctx := t.Context()
	now := time.Now()
	if err := e.q.Heartbeat(ctx, queue.HostInfo{Host: "sbh", Instance: "sbh/a", Version: "v1", StartedAt: now, LastSeen: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.q.StandbyBeat(ctx, queue.HostInfo{Host: "sbh", Instance: "sbh/b", Version: "v2", StartedAt: now.Add(-time.Minute), LastSeen: now}); err != nil {
		t.Fatal(err)
	}
	standbyOf := func(path string) *api.Standby {
		t.Helper()
		code, body := e.do("admin", http.MethodGet, path, nil)
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", path, code, body)
		}
		var one api.Host
		var list struct{ Hosts []api.Host }
		if path == "/v1/hosts" {
			if err := json.Unmarshal(body, &list); err != nil {
				t.Fatal(err)
			}
		} else if err := json.Unmarshal(body, &one); err != nil {
			t.Fatal(err)
		} else {
			list.Hosts = []api.Host{one}
		}
		for _, h := range list.Hosts {
			if h.Host == "sbh" {
				if !h.Online || h.Instance != "sbh/a" {
					t.Fatalf("%s: the host is %s", path, body)
				}
				return h.Standby
			}
		}
		t.Fatalf("%s: no host sbh in %s", path, body)
		return nil
	}
	for _, path := range []string{"/v1/hosts", "/v1/hosts/sbh"} {
		sb := standbyOf(path)
		if sb == nil || sb.Instance != "sbh/b" || sb.Version != "v2" || sb.LastSeen.Sub(sb.WaitingSince) != time.Minute {
			t.Fatalf("%s: standby %+v, want sbh/b's report", path, sb)
		}
	}
	if _, err := e.q.StandbyBeat(ctx, queue.HostInfo{Host: "sbh", Instance: "sbh/a", Version: "v1", StartedAt: now, LastSeen: now}); err != nil {
		t.Fatal(err)
	}
	if sb := standbyOf("/v1/hosts"); sb != nil {
		t.Fatalf("the holder's own leftover report shows as a standby: %+v", sb)
	}
}

// TestHostViewReadsThatHostOnly: GET /v1/hosts/{host} read the whole
// fleet's rows and heartbeats (the listing's) to keep one host: with
// 300 hosts online, 600 KV entries and more for each `orderly hosts H`
// and each forget's check. It reads the host's own; counted here as the
// messages the API's NATS connection receives.
func TestHostViewReadsThatHostOnly(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	ctx := t.Context()
	const n = 300
	for i := range n {
		h := fmt.Sprintf("fleet-%d", i)
		now := time.Now()
		if err := e.q.Heartbeat(ctx, queue.HostInfo{Host: h, Instance: h + "/a", Version: "v1", StartedAt: now, LastSeen: now}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.q.StandbyBeat(ctx, queue.HostInfo{Host: h, Instance: h + "/b", Version: "v1", StartedAt: now, LastSeen: now}); err != nil {
			t.Fatal(err)
		}
	}
	in := func() uint64 { return e.q.Conn().Stats().InMsgs }
	before := in()
	code, body := e.do("admin", http.MethodGet, "/v1/hosts", nil)
	var list struct{ Hosts []api.Host }
	if err := json.Unmarshal(body, &list); code != http.StatusOK || err != nil || len(list.Hosts) != n {
		t.Fatalf("hosts: %d, %d hosts", code, len(list.Hosts))
	}
	all := in() - before
	before = in()
	code, body = e.do("admin", http.MethodGet, "/v1/hosts/fleet-7", nil)
	var one api.Host
	if err := json.Unmarshal(body, &one); code != http.StatusOK || err != nil || !one.Online || one.Instance != "fleet-7/a" || one.Standby == nil || one.Standby.Instance != "fleet-7/b" {
		t.Fatalf("host: %d %s", code, body)
	}
	single := in() - before
	t.Logf("messages in: the listing %d, one host %d", all, single)
	if single > 50 {
		t.Fatalf("one host's view took %d messages from NATS (the listing of %d hosts: %d)", single, n, all)
	}
}

// TestHostsShowTheRestoreGuard: a worker running without its claim mark
// (its NATS user lacks the subjects) said so in one WARN at its start.
// GET /v1/hosts and GET /v1/hosts/{host} now carry what its heartbeat
// says (restore_guard), and nothing for a worker from before it.
func TestHostsShowTheRestoreGuard(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	ctx := t.Context()
	now := time.Now()
	const off = "off: could not read the host's claim mark: NATS did not answer within 2s"
	for _, h := range []queue.HostInfo{{Host: "rg-off", RestoreGuard: off}, {Host: "rg-on", RestoreGuard: "on"}, {Host: "rg-old"}} {
		h.Instance, h.Version, h.StartedAt, h.LastSeen = h.Host+"/a", "v1", now, now
		if err := e.q.Heartbeat(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	code, body := e.do("admin", http.MethodGet, "/v1/hosts", nil)
	if code != http.StatusOK {
		t.Fatalf("GET /v1/hosts: %d %s", code, body)
	}
	var list struct{ Hosts []map[string]any }
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"rg-off": off, "rg-on": "on", "rg-old": nil}
	for _, h := range list.Hosts {
		if w, ok := want[h["host"].(string)]; ok {
			if h["restore_guard"] != w {
				t.Errorf("%s: restore_guard %v, want %v", h["host"], h["restore_guard"], w)
			}
			delete(want, h["host"].(string))
		}
	}
	if len(want) != 0 {
		t.Fatalf("hosts missing from the list: %v in %s", want, body)
	}
	code, body = e.do("admin", http.MethodGet, "/v1/hosts/rg-off", nil)
	var one api.Host
	if code != http.StatusOK || json.Unmarshal(body, &one) != nil || one.RestoreGuard != off {
		t.Fatalf("GET /v1/hosts/rg-off: %d %s, want restore_guard %q", code, body, off)
	}
}

// TestHostsShowAWorkerCutOffFromPostgres: a worker that holds its host
// but cannot reach PostgreSQL runs nothing while its orders pile up, and
// the listing showed it online like any other. GET /v1/hosts and GET
// /v1/hosts/{host} now carry what its heartbeat says: since when and how
// many statements failed to anyone, the error (which names the database's
// address and login) to an admin or an auditor only; nothing for a
// worker that reaches it.
func TestHostsShowAWorkerCutOffFromPostgres(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	ctx := t.Context()
	now := time.Now()
	since := now.Add(-3 * time.Minute).UTC().Truncate(time.Millisecond)
	const why = `failed to connect to user=orderly_worker_web3: FATAL: role "orderly_worker_web3" is not permitted to log in (SQLSTATE 28000)`
	for _, h := range []queue.HostInfo{{Host: "pg-cut", PostgresUnreachable: &queue.PostgresOutage{Since: since, Error: why, Failures: 90}}, {Host: "pg-ok"}} {
		h.Instance, h.Version, h.StartedAt, h.LastSeen = h.Host+"/a", "v1", now, now
		if err := e.q.Heartbeat(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	for who, wantErr := range map[string]string{"admin": why, "auditor": why, "alice": ""} {
		code, body := e.do(who, http.MethodGet, "/v1/hosts", nil)
		var list struct{ Hosts []api.Host }
		if code != http.StatusOK || json.Unmarshal(body, &list) != nil {
			t.Fatalf("GET /v1/hosts as %s: %d %s", who, code, body)
		}
		seen := 0
		for _, h := range list.Hosts {
			switch h.Host {
			case "pg-cut":
				seen++
				o := h.PostgresUnreachable
				if !h.Online || o == nil || !o.Since.Equal(since) || o.Failures != 90 || o.Error != wantErr {
					t.Errorf("as %s, pg-cut: online %v, postgres_unreachable %+v; want online, since %s, 90 failures, error %q", who, h.Online, o, since, wantErr)
				}
			case "pg-ok":
				seen++
				if !h.Online || h.PostgresUnreachable != nil {
					t.Errorf("as %s, pg-ok: online %v, postgres_unreachable %+v; want online and nothing", who, h.Online, h.PostgresUnreachable)
				}
			}
		}
		if seen != 2 {
			t.Fatalf("as %s, the listing lacks pg-cut or pg-ok: %s", who, body)
		}
	}
	code, body := e.do("alice", http.MethodGet, "/v1/hosts/pg-cut", nil)
	var one api.Host
	if code != http.StatusOK || json.Unmarshal(body, &one) != nil || one.PostgresUnreachable == nil || one.PostgresUnreachable.Error != "" {
		t.Fatalf("GET /v1/hosts/pg-cut as alice: %d %s, want the outage without its error", code, body)
	}
}
