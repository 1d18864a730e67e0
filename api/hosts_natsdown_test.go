package api_test

import (
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// natsRequestsBefore is what the hosts listing waited with NATS down
// before its read of the heartbeats had one bound: at least two
// JetStream requests (the bucket's status, then the consumer's creation)
// one after another, each waiting out jetstream's 5 s, then a 503.
const natsRequestsBefore = 2 * 5 * time.Second

// TestHostsListedFromPostgresWithNATSDown: with nats-server stopped under
// a running API, GET /v1/hosts and GET /v1/hosts/{host} answer 200
// within their bound (before the sum of the NATS requests' timeouts they
// used to wait out one after another, then answer 503) with what
// PostgreSQL knows, the host's last recorded worker, its current and
// queued orders, each host and the list marked "registry": "unavailable"
// (whether it is online is unknown).
func TestHostsListedFromPostgresWithNATSDown(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	e := newAPIEnv(t, envOptions{natsURL: ns.ClientURL()})
	ctx := testenv.Context(t)
	o := e.submit("alice", map[string]any{"host": "cut", "command": "sleep", "args": []string{"60"}}, "", http.StatusAccepted)
	e.submit("alice", map[string]any{"host": "cut", "command": "true"}, "", http.StatusAccepted)
	if _, _, err := e.store.TakeHost(ctx, "cut", "1.0", postgres.Owner{Instance: "cut/1"}); err != nil {
		t.Fatal(err)
	}
	if _, claimed, err := e.store.Claim(ctx, o.ID, "cut/1", 1); err != nil || !claimed {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	now := time.Now()
	if err := e.q.Heartbeat(ctx, queue.HostInfo{Host: "cut", Instance: "cut/1", Version: "1.0", StartedAt: now, LastSeen: now}); err != nil {
		t.Fatal(err)
	}
	type listing struct {
		Hosts    []api.Host `json:"hosts"`
		Registry *string    `json:"registry"`
	}
	code, body := e.do("admin", http.MethodGet, "/v1/hosts", nil)
	var up listing
	if err := json.Unmarshal(body, &up); code != http.StatusOK || err != nil || len(up.Hosts) != 1 || !up.Hosts[0].Online || up.Hosts[0].Registry != "" || up.Registry != nil {
		t.Fatalf("GET /v1/hosts with NATS up: %d %s, want cut online, no registry", code, body)
	}

	ns.Shutdown()
	ns.WaitForShutdown()

	get := func(path string, into any) time.Duration {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+e.tokens["admin"])
		start := time.Now()
		resp, err := (&http.Client{Timeout: natsRequestsBefore - time.Second}).Do(req)
		if err != nil {
			t.Fatalf("GET %s with NATS down: %v (after %s)", path, err, time.Since(start).Round(time.Millisecond))
		}
		defer resp.Body.Close()
		took := time.Since(start)
		if err := json.NewDecoder(resp.Body).Decode(into); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s with NATS down: %d, %v (after %s)", path, resp.StatusCode, err, took.Round(time.Millisecond))
		}
		return took
	}
	wantHost := func(what string, h api.Host) {
		t.Helper()
		if h.Host != "cut" || h.Registry != "unavailable" || h.Online || h.Instance != "cut/1" || h.Version != "1.0" || h.LastSeen == nil ||
			h.CurrentOrder == nil || *h.CurrentOrder != o.ID || h.QueueDepth == nil || *h.QueueDepth != 1 {
			t.Fatalf("%s with NATS down: %+v, want cut as PostgreSQL knows it (worker cut/1, version 1.0, running %s, 1 queued), registry unavailable",
				what, h, o.ID)
		}
	}
	var down listing
	took := get("/v1/hosts", &down)
	if len(down.Hosts) != 1 || down.Registry == nil || *down.Registry != "unavailable" {
		t.Fatalf("GET /v1/hosts with NATS down: %+v, want one host and registry unavailable", down)
	}
	wantHost("GET /v1/hosts", down.Hosts[0])
	t.Logf("GET /v1/hosts with NATS down answered in %s", took.Round(time.Millisecond))

	var one api.Host
	took = get("/v1/hosts/cut", &one)
	wantHost("GET /v1/hosts/cut", one)
	if one.Running == nil || one.Running.ID != o.ID || len(one.Queued) != 1 {
		t.Fatalf("GET /v1/hosts/cut with NATS down: running %+v, %d queued; want %s and 1", one.Running, len(one.Queued), o.ID)
	}
	t.Logf("GET /v1/hosts/cut with NATS down answered in %s", took.Round(time.Millisecond))
}

// TestHostsListedFromPostgresWithNATSFrozen is
// TestHostsListedFromPostgresWithNATSDown with nats-server frozen
// instead of stopped: the API's connections stay open and nothing on
// them is answered (what a SIGSTOP does to its clients; the server here
// runs in the test's process, so a proxy between them stops carrying
// bytes). The listing answers within its bound from PostgreSQL.
func TestHostsListedFromPostgresWithNATSFrozen(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	fz := newFreezer(t, ns.Addr().String())
	e := newAPIEnv(t, envOptions{natsURL: "nats://" + fz.addr()})
	ctx := testenv.Context(t)
	if _, _, err := e.store.TakeHost(ctx, "ice", "1.0", postgres.Owner{Instance: "ice/1"}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := e.q.Heartbeat(ctx, queue.HostInfo{Host: "ice", Instance: "ice/1", Version: "1.0", StartedAt: now, LastSeen: now}); err != nil {
		t.Fatal(err)
	}
	fz.freeze()
	defer fz.thaw()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/v1/hosts", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.tokens["admin"])
	start := time.Now()
	resp, err := (&http.Client{Timeout: natsRequestsBefore - time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET /v1/hosts with NATS frozen: %v (after %s)", err, time.Since(start).Round(time.Millisecond))
	}
	defer resp.Body.Close()
	var got struct {
		Hosts    []api.Host `json:"hosts"`
		Registry string     `json:"registry"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusOK ||
		got.Registry != "unavailable" || len(got.Hosts) != 1 || got.Hosts[0].Registry != "unavailable" || got.Hosts[0].Instance != "ice/1" {
		t.Fatalf("GET /v1/hosts with NATS frozen: %d %+v %v, want ice as PostgreSQL knows it, registry unavailable", resp.StatusCode, got, err)
	}
	t.Logf("GET /v1/hosts with NATS frozen answered in %s", time.Since(start).Round(time.Millisecond))
}

// freezer is a TCP proxy to a nats-server that can stop carrying bytes,
// both ways, with every connection left open: the server frozen, as its
// clients see it.
type freezer struct {
	ln   net.Listener
	mu   sync.Mutex
	gate chan struct{} // closed while bytes flow
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, gate: make(chan struct{})}
	close(f.gate)
	var conns sync.WaitGroup
	t.Cleanup(func() { f.thaw(); _ = ln.Close(); conns.Wait() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			conns.Add(2)
			go func() { defer conns.Done(); f.carry(s, c) }()
			go func() { defer conns.Done(); f.carry(c, s) }()
		}
	}()
	return f
}

func (f *freezer) addr() string { return f.ln.Addr().String() }

// carry copies from src to dst, holding what it read while frozen.
func (f *freezer) carry(dst, src net.Conn) {
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			f.mu.Lock()
			gate := f.gate
			f.mu.Unlock()
			<-gate
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.gate:
		f.gate = make(chan struct{})
	default:
	}
}

func (f *freezer) thaw() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.gate:
	default:
		close(f.gate)
	}
}

// TestHostsListedWithoutHeartbeatsWarnedOncePerOutage: with nats-server
// frozen, three hosts listings without the heartbeats log one WARN, not
// one each (every open hosts page lists them each 5 s: a line every few
// seconds for the whole outage), and the first listing with them again
// logs one INFO counting those without.
func TestHostsListedWithoutHeartbeatsWarnedOncePerOutage(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	fz := newFreezer(t, ns.Addr().String())
	logs := &testenv.LogBuffer{}
	e := newAPIEnv(t, envOptions{natsURL: "nats://" + fz.addr(), logger: slog.New(slog.NewJSONHandler(logs, nil))})
	list := func() string {
		t.Helper()
		code, body := e.do("admin", http.MethodGet, "/v1/hosts", nil)
		var l struct {
			Registry string `json:"registry"`
		}
		if err := json.Unmarshal(body, &l); code != http.StatusOK || err != nil {
			t.Fatalf("GET /v1/hosts: %d %s", code, body)
		}
		return l.Registry
	}
	if r := list(); r != "" {
		t.Fatalf("with NATS up the listing says registry %q", r)
	}
	fz.freeze()
	for range 3 {
		if r := list(); r != "unavailable" {
			t.Fatalf("with NATS frozen the listing says registry %q, want unavailable", r)
		}
	}
	fz.thaw()
	testenv.WaitUntil(t, 30*time.Second, "a listing with the heartbeats again", func() bool { return list() == "" })
	const warned, again = "hosts listed without their heartbeats: NATS did not answer", "hosts listed with their heartbeats again"
	if w := logLines(t, logs, warned); len(w) != 1 || w[0]["level"] != "WARN" {
		t.Errorf("%d %q lines for at least 3 listings without the heartbeats, want 1 WARN:\n%s", len(w), warned, logs.String())
	}
	if a := logLines(t, logs, again); len(a) != 1 || a[0]["level"] != "INFO" {
		t.Errorf("%d %q lines once the heartbeats were read again, want 1 INFO:\n%s", len(a), again, logs.String())
	} else if n, _ := a[0]["listings_without"].(float64); n < 3 {
		t.Errorf("the INFO counts %v listings without the heartbeats, want at least 3: %v", n, a[0])
	}
}
