package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/api/compat"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/netacl"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// failingReads is a store whose order reads fail while failures is
// positive (one per read), as they do while PostgreSQL restarts.
type failingReads struct {
	api.Store
	failures *atomic.Int64
}

func (f failingReads) GetOrder(ctx context.Context, id uuid.UUID) (*order.Order, error) {
	if f.failures.Add(-1) >= 0 {
		return nil, errors.New("failed to connect to `host=/tmp user=orderly database=orderly`: server error (FATAL: the database system is shutting down (SQLSTATE 57P03))")
	}
	return f.Store.GetOrder(ctx, id)
}

// readSignal is a store that closes the channel in reads at the first
// order read after it is set: a wait's poll, so its submission is done.
type readSignal struct {
	api.Store
	reads *atomic.Pointer[chan struct{}]
}

func (r readSignal) GetOrder(ctx context.Context, id uuid.UUID) (*order.Order, error) {
	if ch := r.reads.Swap(nil); ch != nil {
		close(*ch)
	}
	return r.Store.GetOrder(ctx, id)
}

// TestHTTPExecWaitOutlastsAFailedRead: a read of the order that fails
// while an httpexec request waits for it (PostgreSQL restarting) does not
// end the wait. It did: the request took its order, still running, for
// one that outlived the wait, killed it and answered 500 `did not finish
// within 30s; canceled`; a client told so sends the request again, to
// run a command that had been killed halfway.
func TestHTTPExecWaitOutlastsAFailedRead(t *testing.T) {
	var failures atomic.Int64
	hx := newHTTPExecSurface(t, envOptions{store: func(s api.Store) api.Store { return failingReads{Store: s, failures: &failures} }})
	failures.Store(1)
	resp, err := http.Post(hx.url+"/dash", "application/json",
		strings.NewReader(`{"args":["-c","sleep 1.5; echo done"],"stdout":{"capture":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != `{"return":0,"stderr":null,"stdout":{"content":"done\n","encode":null}}` {
		t.Errorf("with a read failing during the wait: %d %q, want 200 and the command's output", resp.StatusCode, b)
	}
	if failures.Load() > 0 {
		t.Errorf("no read failed (%d left): the test proves nothing", failures.Load())
	}
	if got := sourceStatuses(t, hx.apiEnv, "httpexec"); len(got) != 1 || got[0] != string(order.StatusSucceeded) {
		t.Errorf("the order is %v, want [succeeded]", got)
	}
}

// TestCompatCutClientsQueuedOrderIsCanceled: an httpexec request or a
// synchronous Vigrid execute whose client goes away (its connection cut:
// a proxy, the API restarting) while its order is queued has the order
// canceled, so that the client's sending it again runs the command once.
// The order stayed queued (the cancel was asked with the request's ended
// context, and failed): it ran when the host's worker came, for nobody,
// and the request sent again ran it a second time.
func TestCompatCutClientsQueuedOrderIsCanceled(t *testing.T) {
	var reads atomic.Pointer[chan struct{}]
	hx := newHTTPExecSurface(t, envOptions{hosts: []string{}, // h1 has no worker yet
		store: func(s api.Store) api.Store { return readSignal{Store: s, reads: &reads} }})
	e := hx.apiEnv
	vigridURL := startVigrid(t, e)

	httpexecReq := func(ctx context.Context) *http.Request { return echoX(t, ctx, hx.url) }
	vigridReq := func(ctx context.Context) *http.Request {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, vigridURL+"/api/v1/execute",
			strings.NewReader(`{"command":"echo","arguments":["x"],"synchronous":true}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
		return req
	}
	for _, c := range []struct {
		source string
		req    func(context.Context) *http.Request
	}{{"httpexec", httpexecReq}, {"vigrid", vigridReq}} {
		read := make(chan struct{})
		reads.Store(&read)
		// Cut once the request waits for its order: recorded, queued (no
		// worker) and read.
		cutAt(t, c.source, c.req, read)
		waitSourceStatuses(t, e, c.source, string(order.StatusCanceled))
	}
	e.startWorker("h1")
	// Sent again, each runs once.
	wantEchoedX(t, "httpexec sent again", httpexecReq(testenv.Context(t)))
	resp, err := http.DefaultClient.Do(vigridReq(testenv.Context(t)))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Result struct {
			Stdout     string `json:"stdout"`
			ReturnCode int    `json:"return_code"`
		} `json:"result"`
	}
	err = json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || m.Result.Stdout != "x\n" || m.Result.ReturnCode != 0 {
		t.Errorf("Vigrid sent again: %d %+v %v, want 200 and x", resp.StatusCode, m, err)
	}
	for _, source := range []string{"httpexec", "vigrid"} {
		if got := sourceStatuses(t, e, source); !slices.Equal(got, []string{string(order.StatusCanceled), string(order.StatusSucceeded)}) {
			t.Errorf("%s's orders are %v, want [canceled succeeded]: the command ran once", source, got)
		}
	}
}

// TestCompatWaitEndedByTheAPIsStopIsCut: a synchronous Vigrid execute
// waits for its order, queued (no worker), when its API stops, which
// ends the requests' contexts (cmd/orderly's shutdown). The order is
// canceled, and the client, still connected, has its connection cut as
// under a killed API: it was answered `200 OK` with an empty body, no
// JSON a Vigrid client could read (hJ8's rolling upgrade found it with
// httpexec, TestCompatWaiterOfAStoppedAPIIsCut).
func TestCompatWaitEndedByTheAPIsStopIsCut(t *testing.T) {
	var reads atomic.Pointer[chan struct{}]
	e := newAPIEnv(t, envOptions{hosts: []string{},
		store: func(s api.Store) api.Store { return readSignal{Store: s, reads: &reads} }})
	read := make(chan struct{})
	reads.Store(&read)
	base, stop := context.WithCancel(context.Background())
	defer stop()
	url := serveVigrid(t, e, base)
	done := make(chan error, 1)
	go func() {
		req, err := http.NewRequestWithContext(testenv.Context(t), http.MethodPost, url+"/api/v1/execute",
			strings.NewReader(`{"command":"echo","arguments":["x"],"synchronous":true}`))
		if err != nil {
			done <- err
			return
		}
		req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			done <- fmt.Errorf("answered %s %q", resp.Status, b)
			return
		}
		done <- nil
	}()
	<-read // recorded, queued and read: the request waits
	stop()
	if err := <-done; err != nil {
		t.Errorf("the Vigrid client of a stopping API: %v, want its connection cut", err)
	}
	waitSourceStatuses(t, e, "vigrid", string(order.StatusCanceled))
}

// TestStage0StreamEndedByTheAPIsStopIsCut: a stage0 execute streams its
// run, queued (no worker), when its API stops, which ends the requests'
// contexts. The run is canceled, and the stream is cut, as under a
// killed API, not ended as a whole stream is: it ended cleanly without
// its done event, which a client reading to the end takes for the run's
// whole output.
func TestStage0StreamEndedByTheAPIsStopIsCut(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{}})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Hello.md"), []byte(stage0Runbook("Hello", "{}", "", "echo hello")), 0o644); err != nil {
		t.Fatal(err)
	}
	base, stop := context.WithCancel(context.Background())
	defer stop()
	url := serveStage0Base(t, e, dir, base)
	login, err := http.Post(url+"/dev-login", "application/json", strings.NewReader(`{"subject":"dev","roles":["developer"]}`))
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	err = json.NewDecoder(login.Body).Decode(&tok)
	login.Body.Close()
	if err != nil || tok.AccessToken == "" {
		t.Fatalf("dev-login: %v", err)
	}
	resp := executeStage0(t, url, tok.AccessToken, "Hello.md") // its stream begun: the run recorded and queued
	defer resp.Body.Close()
	stop()
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Errorf("the stage0 stream of a stopping API ended whole (%q), want it cut", b)
	}
	waitSourceStatuses(t, e, "stage0", string(order.StatusCanceled))
}

// insertAnswerLost is a store whose first insert commits and then
// answers as pgx does when the caller's context ends while the statement
// is out: the context's error, though the order is recorded. It waits
// for that end, so the client is cut while the insert is out; an insert
// whose context does not end with the request (the intake's, since) is
// answered after 5 s.
type insertAnswerLost struct {
	intake.Store
	held     *atomic.Bool
	inserted chan struct{} // closed once the first insert committed
}

func (s insertAnswerLost) InsertOrder(ctx context.Context, o *order.Order) (*order.Order, error) {
	if !s.held.CompareAndSwap(false, true) {
		return s.Store.InsertOrder(ctx, o)
	}
	prev, err := s.Store.InsertOrder(context.WithoutCancel(ctx), o)
	close(s.inserted)
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(5 * time.Second):
	}
	return prev, err
}

// TestHTTPExecCutDuringTheInsertRunsOnce: an httpexec client cut while
// its order's insert is out (the API restarting, a proxy's timeout) has
// the order canceled as one cut while it waits, and sending the request
// again runs the command once. The insert ended with the request: the
// order was committed but never published, the reconciler queued it
// later for nobody, and the request sent again ran it a second time.
func TestHTTPExecCutDuringTheInsertRunsOnce(t *testing.T) {
	var held atomic.Bool
	inserted := make(chan struct{})
	hx := newHTTPExecSurface(t, envOptions{hosts: []string{}, lost: 200 * time.Millisecond, // h1 has no worker yet
		intakeStore: func(s intake.Store) intake.Store { return insertAnswerLost{Store: s, held: &held, inserted: inserted} }})
	e := hx.apiEnv
	req := func(ctx context.Context) *http.Request { return echoX(t, ctx, hx.url) }
	cutAt(t, "httpexec", req, inserted)
	waitSourceStatuses(t, e, "httpexec", string(order.StatusCanceled))
	e.startWorker("h1")
	wantEchoedX(t, "sent again", req(testenv.Context(t)))
	if got := sourceStatuses(t, e, "httpexec"); !slices.Equal(got, []string{string(order.StatusCanceled), string(order.StatusSucceeded)}) {
		t.Errorf("the orders are %v, want [canceled succeeded]: the command ran once", got)
	}
}

// endReadFails is a store whose first read of a finished order fails, as
// it does while PostgreSQL restarts: the read that would end a wait.
type endReadFails struct {
	api.Store
	failed *atomic.Bool
}

func (s endReadFails) GetOrder(ctx context.Context, id uuid.UUID) (*order.Order, error) {
	o, err := s.Store.GetOrder(ctx, id)
	if err == nil && o.Status.Terminal() && s.failed.CompareAndSwap(false, true) {
		return nil, errors.New("failed to connect to `host=/tmp user=orderly database=orderly`: server error (FATAL: the database system is shutting down (SQLSTATE 57P03))")
	}
	return o, err
}

// TestStage0ExecuteOutlastsAFailedEndRead: a stage0 execute whose run
// ended while its read of the finished order failed (PostgreSQL
// restarting) ends its stream with the run's done event once a read
// succeeds. The stream was cut without one: a client that sends the
// execute again, as one whose stream broke does, ran the script twice.
func TestStage0ExecuteOutlastsAFailedEndRead(t *testing.T) {
	var failed atomic.Bool
	e := newAPIEnv(t, envOptions{hosts: []string{"h1"}, store: func(s api.Store) api.Store { return endReadFails{Store: s, failed: &failed} }})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Hello.md"), []byte(stage0Runbook("Hello", "{}", "", "echo hello")), 0o644); err != nil {
		t.Fatal(err)
	}
	url, token := startStage0(t, e, dir)
	resp := executeStage0(t, url, token, "Hello.md")
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "event: done\ndata: {\"success\": true, \"runbook\": \"Hello.md\", \"return_code\": 0, \"stdout\": \"hello\\n\"") {
		t.Errorf("execute with the end's read failing: %d %q %v, want 200 and the run's done event", resp.StatusCode, b, err)
	}
	if !failed.Load() {
		t.Error("no read of the finished order failed: the test proves nothing")
	}
	if got := sourceStatuses(t, e, "stage0"); !slices.Equal(got, []string{string(order.StatusSucceeded)}) {
		t.Errorf("the orders are %v, want [succeeded]", got)
	}
}

// TestStage0ExecuteOutlastsItsLiveFeed: a stage0 execute whose live feed
// ends for good (the API's NATS connection closed) while the script runs
// ends its stream with the run's own done event. It answered done at
// once from the order as it then was: running, return_code 1, while the
// script ran on.
func TestStage0ExecuteOutlastsItsLiveFeed(t *testing.T) {
	var reads atomic.Pointer[chan struct{}]
	e := newAPIEnv(t, envOptions{hosts: []string{"h1"}, store: func(s api.Store) api.Store { return readSignal{Store: s, reads: &reads} }})
	dir := t.TempDir()
	gate := filepath.Join(t.TempDir(), "go-on")
	script := "echo start\nwhile [ ! -e " + gate + " ]; do sleep 0.05; done\necho end"
	if err := os.WriteFile(filepath.Join(dir, "Gated.md"), []byte(stage0Runbook("Gated", "{}", "", script)), 0o644); err != nil {
		t.Fatal(err)
	}
	// The API on a NATS connection of its own, which the test closes
	// (the worker keeps e's).
	own := *e
	own.q = testenv.Queue(t, e.natsURL, "stage0-api", queue.Options{AckWait: 2 * time.Second, LeaseTTL: 2 * time.Second})
	url, token := startStage0(t, &own, dir)
	resp := executeStage0(t, url, token, "Gated.md")
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("the stream ended before the script's first line: %v", err)
		}
		if line == "data: start\n" {
			break
		}
	}
	// The script waits for the gate; the feed ends now, and the gate
	// opens once the API has read the order after that.
	read := make(chan struct{})
	reads.Store(&read)
	own.q.Conn().Close()
	<-read
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(br)
	if err != nil || !strings.Contains(string(rest), "event: done\ndata: {\"success\": true, \"runbook\": \"Gated.md\", \"return_code\": 0, \"stdout\": \"start\\nend\\n\"") {
		t.Errorf("the stream after its live feed ended: %q %v, want the run's done event, return_code 0", rest, err)
	}
}

// startVigrid serves e's API with the Vigrid surface under /api/v1, for
// echo on h1 by the roles ops and admin, and returns its URL.
func startVigrid(t *testing.T, e *apiEnv) string {
	t.Helper()
	return serveVigrid(t, e, nil)
}

// serveVigrid is startVigrid whose server's requests, with base given,
// have base as their context's parent: `orderly api` ends it to stop.
func serveVigrid(t *testing.T, e *apiEnv, base context.Context) string {
	t.Helper()
	cfg := config.Default()
	cfg.HTTP.MaxBodyBytes = 1 << 20
	cfg.Compat.Vigrid.Enabled, cfg.Compat.Vigrid.Prefix, cfg.Compat.Vigrid.Host = true, "/api/v1", "h1"
	cfg.Compat.Vigrid.MaxWait = 20 * time.Second
	rule := config.Rule{Name: "vigrid", Roles: []string{"ops", "admin"}, Hosts: []string{"h1"}, Allow: []string{`^echo( |$)`}}
	srv := e.runbookAPI(rule, func() api.Settings { return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second} },
		func() config.Runbooks { return cfg.Runbooks })
	authn := authenticator(t, e.tokens, "")
	srv.MountCompat(api.CompatSurface{Prefix: "/api/v1", Handler: &compat.Vigrid{Deps: compat.Deps{Orders: srv,
		Config: func() config.Config { return cfg }, ACL: func() *netacl.ACL { return nil }, Auth: func() compat.Authenticator { return authn },
		Authorize: ruleAuthorizer(t, rule, cfg)},
		PID: func(context.Context, uuid.UUID, int) int { return 0 }}})
	hs := httptest.NewUnstartedServer(srv.Handler())
	if base != nil {
		hs.Config.BaseContext = func(net.Listener) context.Context { return base }
	}
	hs.Start()
	t.Cleanup(hs.Close)
	return hs.URL
}

// startStage0 serves e's API with the stage0 surface over the runbooks in
// dir for hosts h1, and returns its URL and a dev-login token; with, when
// given, sets the API up further before it serves.
func startStage0(t *testing.T, e *apiEnv, dir string, with ...func(*api.Server)) (url, token string) {
	t.Helper()
	url = serveStage0(t, e, dir, with...)
	resp, err := http.Post(url+"/dev-login", "application/json", strings.NewReader(`{"subject":"dev","roles":["developer"]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var login struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&login); err != nil || login.AccessToken == "" {
		t.Fatalf("dev-login: %v", err)
	}
	return url, login.AccessToken
}

// serveStage0 serves e's API with the stage0 surface (and /dev-login)
// over the runbooks in dir for hosts h1, and returns its URL; with, when
// given, changes the API before it serves.
func serveStage0(t *testing.T, e *apiEnv, dir string, with ...func(*api.Server)) string {
	t.Helper()
	return serveStage0Base(t, e, dir, nil, with...)
}

// serveStage0Base is serveStage0 whose server's requests, with base
// given, have base as their context's parent: `orderly api` ends it to
// stop.
func serveStage0Base(t *testing.T, e *apiEnv, dir string, base context.Context, with ...func(*api.Server)) string {
	t.Helper()
	cfg := config.Default()
	cfg.Runbooks.Dir, cfg.Runbooks.Timeout = dir, time.Minute
	cfg.HTTP.MaxBodyBytes = 1 << 20
	cfg.Compat.Stage0.Enabled, cfg.Compat.Stage0.EnableLogin = true, true
	cfg.Compat.Stage0.JWTSecret = "stage0-faults-test-secret-0123456789abcdef"
	cfg.Compat.Stage0.Hosts = []string{"h1"}
	current := func() config.Config { return cfg }
	srv := e.runbookAPI(config.Rule{Name: "stage0", Roles: []string{"developer"}, Hosts: []string{"*"}, Allow: []string{"^runbook:"}},
		func() api.Settings { return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second} },
		func() config.Runbooks { return current().Runbooks })
	h := &compat.Stage0{Deps: compat.Deps{Orders: srv, Config: current, ACL: func() *netacl.ACL { return nil }}, Runbooks: srv,
		Getenv: func(string) (string, bool) { return "", false }, Shutdown: func() {}}
	srv.MountCompat(api.CompatSurface{Prefix: "/api", Handler: h}, api.CompatSurface{Prefix: "/dev-login", Handler: h})
	for _, f := range with {
		f(srv)
	}
	hs := httptest.NewUnstartedServer(srv.Handler())
	if base != nil {
		hs.Config.BaseContext = func(net.Listener) context.Context { return base }
	}
	hs.Start()
	t.Cleanup(hs.Close)
	return hs.URL
}

// echoX is an httpexec request to the surface at url to run echo x, its
// output captured.
func echoX(t *testing.T, ctx context.Context, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/echo", strings.NewReader(`{"args":["x"],"stdout":{"capture":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return req
}

// wantEchoedX sends req, an echoX request, and checks that it was
// answered 200 with x.
func wantEchoedX(t *testing.T, what string, req *http.Request) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != `{"return":0,"stderr":null,"stdout":{"content":"x\n","encode":null}}` {
		t.Errorf("%s: %d %q, want 200 and x", what, resp.StatusCode, b)
	}
}

// cutAt sends source's request req and cuts it (its context canceled)
// once at is closed: the client gone while the API holds the request.
func cutAt(t *testing.T, source string, req func(context.Context) *http.Request, at <-chan struct{}) {
	t.Helper()
	ctx, cut := context.WithCancel(testenv.Context(t))
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req(ctx))
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	<-at
	cut()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("%s: the cut request ended %v, want context canceled", source, err)
	}
}

// waitSourceStatuses waits up to 20 s for the statuses of e's orders from
// source to be want.
func waitSourceStatuses(t *testing.T, e *apiEnv, source string, want ...string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got := sourceStatuses(t, e, source)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's orders are %v, never %v", source, got, want)
		}
	}
}

// executeStage0 asks the stage0 surface at url, as token, to execute
// runbook, and returns the answer.
func executeStage0(t *testing.T, url, token, runbook string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(testenv.Context(t), http.MethodPost, url+"/api/runbooks/"+runbook+"/execute", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestCompatOrdersOfADeadWorkerEndInterrupted: an httpexec request, a
// synchronous Vigrid execute and a stage0 execute whose orders a worker
// claimed and then died under (instance h1/dead: claimed, never
// finished) are answered once the next worker takes the host and ends
// those orders interrupted, each in its surface's format with the
// takeover's reason, not by their waits running out (a "did not finish
// within" 500, Vigrid's "Command timed out."). A Vigrid kill sent while
// no worker lives is recorded and answered 202, recorded and not sent
// (it was answered "sent"), and the sync caller still gets the
// interruption, -1, not -15 (docs/compat.md, "Under faults").
func TestCompatOrdersOfADeadWorkerEndInterrupted(t *testing.T) {
	hx := newHTTPExecSurface(t, envOptions{hosts: []string{}}) // h1's worker is gone
	e := hx.apiEnv
	ctx := testenv.Context(t)
	vigridURL := startVigrid(t, e)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Hello.md"), []byte(stage0Runbook("Hello", "{}", "", "echo hello")), 0o644); err != nil {
		t.Fatal(err)
	}
	s0, token := startStage0(t, e, dir)
	// The worker that dies: it owns h1 and claims what comes.
	if _, _, err := e.store.TakeHost(ctx, "h1", "1.0", postgres.Owner{Instance: "h1/dead"}); err != nil {
		t.Fatal(err)
	}

	type answer struct {
		code        int
		ctype, body string
	}
	send := func(req *http.Request) <-chan answer {
		ch := make(chan answer, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				ch <- answer{}
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			ch <- answer{resp.StatusCode, resp.Header.Get("Content-Type"), string(b)}
		}()
		return ch
	}
	vigridReq := func(path, body string) *http.Request {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, vigridURL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
		return req
	}
	stage0Req, err := http.NewRequestWithContext(ctx, http.MethodPost, s0+"/api/runbooks/Hello.md/execute", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	stage0Req.Header.Set("Authorization", "Bearer "+token)
	httpexecAnswer := send(echoX(t, ctx, hx.url))
	vigridAnswer := send(vigridReq("/api/v1/execute", `{"command":"echo","arguments":["x"],"synchronous":true}`))
	stage0Answer := send(stage0Req)

	ids := map[string]uuid.UUID{}
	testenv.WaitUntil(t, 20*time.Second, "the three orders queued", func() bool {
		rows, err := e.pool.Query(ctx, `SELECT source, id FROM orders WHERE status = 'queued'`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var source string
			var id uuid.UUID
			if err := rows.Scan(&source, &id); err != nil {
				t.Fatal(err)
			}
			ids[source] = id
		}
		return len(ids) == 3
	})
	seq := uint64(0)
	for source, id := range ids {
		seq++
		if _, claimed, err := e.store.Claim(ctx, id, "h1/dead", seq); err != nil || !claimed {
			t.Fatalf("claim the %s order as h1/dead: %v %v", source, claimed, err)
		}
	}
	// Its worker died; a kill now is recorded, and answered so: nothing
	// can signal until a worker takes the host (it was answered "sent").
	kill := <-send(vigridReq("/api/v1/kill", `{}`))
	wantKill := `{"message":"Signal SIGTERM recorded for PID 0, not sent: the worker of host h1 is offline; ` +
		`the command is ended when a worker next takes the host","status":"ok"}` + "\n"
	if kill.code != http.StatusAccepted || kill.body != wantKill {
		t.Errorf("Vigrid kill with the worker gone: %d %q, want 202 %q", kill.code, kill.body, wantKill)
	}
	var onRecord int
	for _, id := range ids {
		if c, err := e.store.CancelRequestOf(ctx, id); err == nil && c.Actor == "alice" && c.Signal == "SIGTERM" {
			onRecord++
		}
	}
	if onRecord != 1 {
		t.Errorf("the Vigrid kill's cancel request: %d on record, want alice's SIGTERM on one order", onRecord)
	}

	e.startWorker("h1") // the next worker takes the host
	reason := "the worker running it (h1/dead) stopped before recording a result; taken over by "

	got := <-httpexecAnswer
	wantBody := "order " + ids["httpexec"].String() + " ended interrupted: interrupted: " + reason
	if got.code != http.StatusInternalServerError || got.ctype != "text/plain; charset=utf-8" || !strings.HasPrefix(got.body, wantBody) {
		t.Errorf("httpexec: %d %q %q, want 500 text/plain %q…", got.code, got.ctype, got.body, wantBody)
	}

	got = <-vigridAnswer
	var v struct {
		OrderID uuid.UUID `json:"order_id"`
		Result  struct {
			Stdout     string `json:"stdout"`
			Stderr     string `json:"stderr"`
			ReturnCode int    `json:"return_code"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(got.body), &v); err != nil || got.code != http.StatusOK || v.OrderID != ids["vigrid"] ||
		v.Result.ReturnCode != -1 || !strings.HasPrefix(v.Result.Stderr, "interrupted: "+reason) {
		t.Errorf("Vigrid sync execute: %d %s (%v), want 200, return_code -1 and the takeover's reason in stderr", got.code, got.body, err)
	}

	got = <-stage0Answer
	done := `event: done` + "\n" + `data: {"success": false, "runbook": "Hello.md", "return_code": 1, "stdout": "", "stderr": "interrupted: ` + reason
	if got.code != http.StatusOK || !strings.HasPrefix(got.ctype, "text/event-stream") ||
		!strings.Contains(got.body, "event: stderr\ndata: interrupted: "+reason) || !strings.Contains(got.body, done) {
		t.Errorf("stage0 execute: %d %q\n%s\nwant a stderr event with the takeover's reason and a done with return_code 1", got.code, got.ctype, got.body)
	}

	for source, id := range ids {
		var st string
		if err := e.pool.QueryRow(ctx, `SELECT status FROM orders WHERE id = $1`, id).Scan(&st); err != nil || st != string(order.StatusInterrupted) {
			t.Errorf("the %s order: %s (%v), want interrupted", source, st, err)
		}
	}
}
