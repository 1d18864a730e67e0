package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/queue"
)

// busServe is an `orderly serve` process whose banner gave its addresses.
type busServe struct {
	url, natsURL, dsn, creds, token string
	proc                            *os.Process
}

// startBusServe starts serve on dataDir with extra arguments and
// environment and reads its banner: API, NATS and the add-a-worker line.
func startBusServe(t *testing.T, dataDir string, args []string, env ...string) *busServe {
	t.Helper()
	cmd := exec.Command(orderlyBin, append([]string{"serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--host", "srv"}, args...)...)
	cmd.Env = append([]string{"ORDERLY_NATS__LISTEN=127.0.0.1:0", "ORDERLY_LOG__LEVEL=warn", "ORDERLY_WORKER__KILL_GRACE=500ms",
		"PATH=/usr/bin:/bin", "HOME=" + dataDir}, env...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- strings.TrimSpace(sc.Text())
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	p := &busServe{proc: cmd.Process}
	deadline := time.After(90 * time.Second)
	for p.url == "" || p.natsURL == "" || p.dsn == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatal("serve exited before printing its banner")
			}
			if rest, ok := strings.CutPrefix(line, "API:"); ok {
				p.url = strings.TrimSpace(rest)
			}
			if rest, ok := strings.CutPrefix(line, "NATS:"); ok {
				p.natsURL = strings.Fields(rest)[0]
				if _, dir, ok := strings.Cut(rest, "(credentials: "); ok {
					p.creds, _, _ = strings.Cut(dir, ",")
				}
			}
			if _, rest, ok := strings.Cut(line, "--database-url '"); ok {
				p.dsn = strings.TrimSuffix(rest, "'")
			}
		case <-deadline:
			t.Fatal("serve did not print its banner")
		}
	}
	tok, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	p.token = strings.TrimSpace(string(tok))
	return p
}

func (p *busServe) do(t *testing.T, method, path string, body any) (int, []byte) {
	t.Helper()
	return serveCall(t, p.url, p.token, method, path, body)
}

// startWorker starts `orderly worker --host host` on p's NATS, with the
// credential file serve wrote for the host, and PostgreSQL, as README's
// "Add a second worker" says, and stops it when the test ends.
func (p *busServe) startWorker(t *testing.T, host string) *os.Process {
	t.Helper()
	cmd := exec.Command(orderlyBin, "worker", "--host", host, "--nats-url", p.natsURL,
		"--nats-nkey", filepath.Join(p.creds, "worker-"+host+".nk"), "--database-url", p.dsn)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "ORDERLY_LOG__LEVEL=warn"}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() })
	return cmd.Process
}

func (p *busServe) waitFor(t *testing.T, id uuid.UUID, cond func(api.Order) bool) api.Order {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, b := p.do(t, "GET", "/v1/orders/"+id.String(), nil)
		var o api.Order
		if code == 200 && json.Unmarshal(b, &o) == nil && cond(o) {
			return o
		}
		if time.Now().After(deadline) {
			t.Fatalf("order %s: %d %s", id, code, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// busClient is a NATS connection with one of serve's credentials that
// records the permission violations the server reports.
type busClient struct {
	nc         *nats.Conn
	mu         sync.Mutex
	violations []string
	changed    chan struct{}
}

func dialBus(t *testing.T, url, seed, inbox string) *busClient {
	t.Helper()
	c := &busClient{changed: make(chan struct{}, 64)}
	nk, err := nats.NkeyOptionFromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	c.nc, err = nats.Connect(url, nk, nats.CustomInboxPrefix(inbox), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			c.mu.Lock()
			c.violations = append(c.violations, err.Error())
			c.mu.Unlock()
			select {
			case c.changed <- struct{}{}:
			default:
			}
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.nc.Close)
	return c
}

// denied publishes on subject (or requests, for JetStream API subjects)
// and waits for the server's permission violation.
func (c *busClient) denied(t *testing.T, subject string) {
	t.Helper()
	if strings.HasPrefix(subject, "$JS.API.") {
		if _, err := c.nc.Request(subject, []byte(`{"batch":1}`), time.Second); err == nil {
			t.Fatalf("request on %s answered", subject)
		}
	} else if err := c.nc.Publish(subject, []byte(`{"order_id":"`+uuid.NewString()+`","signal":"SIGKILL"}`)); err != nil {
		t.Fatal(err)
	}
	_ = c.nc.Flush()
	want := `Publish to "` + subject + `"`
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		for _, v := range c.violations {
			if strings.Contains(v, want) {
				c.mu.Unlock()
				return
			}
		}
		c.mu.Unlock()
		select {
		case <-c.changed:
		case <-deadline:
			t.Fatalf("no permission violation for %s; saw %q", want, c.violations)
		}
	}
}

// TestServeBusAuthentication runs a real `orderly serve` and checks its
// embedded NATS end to end: credentials are generated 0600 and printed,
// an unauthenticated client is refused, a submitter's and another host's
// worker's credentials cannot signal, feed output to, consume for or read
// the lease of host srv, a second `orderly worker` joins with the
// documented credential file and runs its host's orders, a control
// message forged with the API's own credential kills nothing, and a real
// cancel records who, when and which signal.
func TestServeBusAuthentication(t *testing.T) {
	dataDir := serveDataDir(t, "orderly-bus-")
	p := startBusServe(t, dataDir, nil, "ORDERLY_NATS__WORKERS=w2")
	if p.creds != filepath.Join(dataDir, "nats-creds") {
		t.Fatalf("banner names credentials %q", p.creds)
	}
	if st, err := os.Stat(p.creds); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("credentials dir: %v %v", st, err)
	}
	for _, f := range []string{"serve.nk", "api.nk", "submitter.nk", "worker-srv.nk", "worker-w2.nk"} {
		if st, err := os.Stat(filepath.Join(p.creds, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, st, err)
		}
	}

	// No credential: refused.
	if nc, err := nats.Connect(p.natsURL); err == nil {
		nc.Close()
		t.Fatal("connected to serve's NATS without credentials")
	} else if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
		t.Fatalf("unauthenticated connect: %v", err)
	}

	// A running order on srv to aim at.
	code, b := p.do(t, "POST", "/v1/orders", map[string]any{"host": "srv", "command": "sleep", "args": []string{"30"}, "timeout_seconds": 60})
	if code != http.StatusAccepted {
		t.Fatalf("submit: %d %s", code, b)
	}
	var o api.Order
	_ = json.Unmarshal(b, &o)
	p.waitFor(t, o.ID, func(o api.Order) bool { return o.Status == "running" })

	sub := dialBus(t, p.natsURL, filepath.Join(p.creds, "submitter.nk"), queue.SubmitterInbox)
	w2 := dialBus(t, p.natsURL, filepath.Join(p.creds, "worker-w2.nk"), queue.WorkerInbox("w2"))
	for _, c := range []*busClient{sub, w2} {
		c.denied(t, queue.ControlSubject+"srv")
		c.denied(t, queue.OutputSubjectOf("srv", o.ID))
		c.denied(t, "$JS.API.CONSUMER.MSG.NEXT.ORDERLY_ORDERS.host_srv")
		c.denied(t, "$JS.API.DIRECT.GET.KV_orderly_hosts.$KV.orderly_hosts.lease.srv")
	}
	w2.denied(t, queue.EventSubjectOf("srv", o.ID))

	// The API's own credential can publish control messages; a forged one
	// (no cancel request in PostgreSQL) is ignored by the worker.
	apiConn := dialBus(t, p.natsURL, filepath.Join(p.creds, "api.nk"), queue.APIInbox)
	forged, _ := json.Marshal(map[string]any{"order_id": o.ID, "signal": "SIGKILL", "actor": "mallory"})
	if err := apiConn.nc.Publish(queue.ControlSubject+"srv", forged); err != nil {
		t.Fatal(err)
	}
	if err := apiConn.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// The worker shares serve's connection; the forged message reached it
	// before this cancel's wake-up unless NATS reordered two publishers,
	// which it does not on one server once the first publish is flushed.
	code, b = p.do(t, "POST", "/v1/orders/"+o.ID.String()+"/cancel", map[string]any{"signal": "SIGINT"})
	if code != http.StatusAccepted {
		t.Fatalf("cancel: %d %s", code, b)
	}
	got := p.waitFor(t, o.ID, terminal)
	if got.Status != "killed" || got.Result == nil || got.Result.Signal == nil || *got.Result.Signal != "SIGINT" {
		t.Fatalf("order %s %+v: want killed by the recorded SIGINT", got.Status, got.Result)
	}
	if c := got.Cancel; c == nil || c.Actor != "admin" || c.Signal != "SIGINT" || c.RequestedAt.IsZero() {
		t.Fatalf("cancel record: %+v", c)
	}

	// README's "Add a second worker": the credential file of its host.
	p.startWorker(t, "w2")
	code, b = p.do(t, "POST", "/v1/orders?wait=60", map[string]any{"host": "w2", "command": "echo", "args": []string{"from", "w2"}})
	if code != http.StatusOK {
		t.Fatalf("order on the second worker: %d %s", code, b)
	}
	var done api.Order
	_ = json.Unmarshal(b, &done)
	if done.Status != "succeeded" || done.Result.Stdout.Content != "from w2\n" {
		t.Fatalf("order on the second worker: %s", b)
	}

	// Its live output went through its own host's subject, and once the
	// result was stored and the real w2 worker's finished event came,
	// serve's API freed its chunks (no worker may: queue.FreeLive): the
	// API's SSE then ends with finished, which carries the output, and no
	// chunk is left.
	waitUntil(t, 10*time.Second, "the second worker's order freed", func() bool {
		code, b = p.do(t, "GET", "/v1/orders/"+done.ID.String()+"/events", nil)
		return code == http.StatusOK && !strings.Contains(string(b), "event: stdout") &&
			strings.Contains(string(b), "event: finished") && strings.Contains(string(b), `"content":"from w2\n"`)
	})

	// A NATS submitter submits with its credential and gets the answer.
	inbox := nats.NewInbox()
	answers, err := sub.nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(queue.SubmitSubject + "w2")
	m.Header.Set("Authorization", "Bearer "+p.token)
	m.Header.Set("Orderly-Reply", inbox)
	m.Data = []byte(`{"host":"w2","command":"true"}`)
	sjs, err := jetstream.New(sub.nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sjs.PublishMsg(t.Context(), m); err != nil {
		t.Fatalf("submitter's publish: %v", err)
	}
	ans, err := answers.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatalf("no answer to the NATS submission: %v", err)
	}
	var answer api.IntakeAnswer
	if err := json.Unmarshal(ans.Data, &answer); err != nil || answer.Order == nil || answer.Order.Host != "w2" {
		t.Fatalf("answer %s", ans.Data)
	}

	// A worker with another host's credential cannot take srv's consumer.
	js, err := jetstream.New(w2.nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if _, err := js.Consumer(ctx, queue.OrdersStream, queue.ConsumerName("srv")); err == nil {
		t.Fatal("worker w2 looked up host srv's consumer")
	}
}

// TestServeReloadsWorkerCredentials: adding a host to nats.workers and
// reloading (SIGHUP) issues its credential without a restart; removing one
// disconnects its worker and refuses it from then on, and listing it again
// lets the same worker connection back in.
func TestServeReloadsWorkerCredentials(t *testing.T) {
	dataDir := serveDataDir(t, "orderly-bus-")
	conf := filepath.Join(dataDir, "orderly.yaml")
	if err := os.WriteFile(conf, []byte("nats:\n  workers: [w2]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startBusServe(t, dataDir, []string{"--config", conf})
	w3 := filepath.Join(p.creds, "worker-w3.nk")
	if _, err := os.Stat(w3); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("w3 has a credential before it is listed: %v", err)
	}
	dropped := make(chan struct{}, 1)
	nk, err := nats.NkeyOptionFromSeed(filepath.Join(p.creds, "worker-w2.nk"))
	if err != nil {
		t.Fatal(err)
	}
	w2, err := nats.Connect(p.natsURL, nk, nats.NoReconnect(), nats.ClosedHandler(func(*nats.Conn) { dropped <- struct{}{} }))
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	// A worker's own connection (queue.Connect) keeps trying.
	worker, err := queue.Connect(p.natsURL, "worker-w2", nk)
	if err != nil {
		t.Fatal(err)
	}
	defer worker.Close()

	if err := os.WriteFile(conf, []byte("nats:\n  workers: [w3]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case <-dropped:
	case <-time.After(30 * time.Second):
		t.Fatal("the worker of a host removed from nats.workers stayed connected")
	}
	// The reload wrote w3's seed before it swapped the users, and the
	// swap is what dropped w2: w3 is accepted now. A reload that adds an
	// account runs the server's reload twice (natsembed.SetCredentials),
	// and a connection that arrives while the second runs can be closed
	// as it registers ("Problem registering with account ... connection
	// closed", CI of 2026-12-06): a worker's own connection retries, so
	// the test does too, for a bounded time (30 s: a loaded machine
	// stretches the reload).
	nk3, err := nats.NkeyOptionFromSeed(w3)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		nc3, err := nats.Connect(p.natsURL, nk3)
		if err == nil {
			nc3.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the host added to nats.workers cannot connect after the reload: %v", err)
		}
	}
	if nc, err := nats.Connect(p.natsURL, nk); err == nil {
		nc.Close()
		t.Fatal("the removed host's worker connected again")
	}
	// Refused for a while (nats.go would give up after two refusals), then
	// listed again: the worker's connection is back without a restart.
	for deadline := time.Now().Add(30 * time.Second); worker.IsConnected(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the removed host's worker connection was never dropped")
		}
	}
	time.Sleep(2 * time.Second) // several refused reconnects
	if err := os.WriteFile(conf, []byte("nats:\n  workers: [w2, w3]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); !worker.IsConnected(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the worker of a host listed again did not reconnect (status %v)", worker.Status())
		}
	}
}
