package main

// Probes (hE9, nineteenth round): every client kind at once on a NATS
// cluster with faults one after another, and orderly serve with a second
// host's worker joined to it, serve killed under the load. They run only
// with ORDERLY_PROBE=1 (each 1–2 minutes, over the fault suite's 60 s);
// docs/decisions.md, nineteenth round, has what they found.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
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

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
)

const probeStage0Secret = "probe-stage0-secret-0123456789abcdef"

// probeCompat is the compat part of the probe's configuration: httpexec
// for h1 (its root holds sh), Vigrid for h2, stage0 for h3.
func probeCompat(root, books, opsHash string) string {
	return fmt.Sprintf(`acl:
  allow: ["127.0.0.1/32", "::1/128"]
auth:
  tokens:
    - {name: ops, sha256: %q}
policy:
  - {name: admin, roles: [admin], hosts: ["*"], allow: [".*"]}
  - {name: httpexec, principals: [httpexec-client], hosts: [h1], allow: [".*"]}
  - {name: ops, principals: [ops], hosts: ["*"], allow: [".*"], run_as: ["", "*"]}
  - {name: stage0, roles: [developer], hosts: ["*"], allow: ['^runbook:']}
runbooks: {dir: %q, timeout: 120s, host: h3}
compat:
  httpexec:
    enabled: true
    host: h1
    exec_root: %q
    principal: httpexec-client
  vigrid:
    enabled: true
    host: h2
  stage0:
    enabled: true
    jwt_secret: %q
    hosts: [h3]
`, opsHash, books, root, probeStage0Secret)
}

// probeClients runs the three compat clients, each sequential, each
// recording its calls in l as faultOrders (wait: a 200 is the finished
// order).
type probeClients struct {
	l       *faultLoad
	ops     string
	jwt     string
	client  *http.Client
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	answers map[string]string // tag → raw answer when not a clean success
}

func (c *probeClients) start(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	for _, kind := range []string{"hx", "vg", "s0"} {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			for n := 1; ctx.Err() == nil; n++ {
				c.call(kind, n)
				pause(ctx, 200*time.Millisecond)
			}
		}()
	}
}

func (c *probeClients) stop() {
	c.cancel()
	c.wg.Wait()
}

func (c *probeClients) call(kind string, n int) {
	l := c.l
	host := map[string]string{"hx": "h1", "vg": "h2", "s0": "h3"}[kind]
	tag := fmt.Sprintf("%s-%d", kind, n)
	o := &faultOrder{tag: tag, host: host, submitter: kind, n: n, wait: true, attempts: 1}
	l.mu.Lock()
	l.orders = append(l.orders, o)
	l.mu.Unlock()
	args := []string{"-c", faultScript, "_", tag, l.marker(host), l.lock(host), "", "0.05"}
	urls := l.s.apiURLs()
	base := urls[n%len(urls)]
	var req *http.Request
	switch kind {
	case "hx":
		b, _ := json.Marshal(map[string]any{"args": args})
		req, _ = http.NewRequest("POST", base+"/sh", strings.NewReader(string(b)))
		req.Header.Set("Content-Type", "application/json")
	case "vg":
		b, _ := json.Marshal(map[string]any{"command": "sh", "arguments": args, "synchronous": true})
		req, _ = http.NewRequest("POST", base+"/api/v1/execute", strings.NewReader(string(b)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+c.ops)
	case "s0":
		b, _ := json.Marshal(map[string]any{"env_vars": map[string]string{"PROBE_TAG": tag, "PROBE_MARKER": l.marker(host),
			"PROBE_LOCK": l.lock(host)}})
		req, _ = http.NewRequest("POST", base+"/api/runbooks/Probe.md/execute", strings.NewReader(string(b)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+c.jwt)
		req.Header.Set("X-Correlation-Id", tag)
	}
	sent := time.Now()
	resp, err := c.client.Do(req)
	var code int
	var body []byte
	var errText string
	if err != nil {
		errText = err.Error()
	} else {
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		code = resp.StatusCode
		if err != nil {
			errText = "body: " + err.Error()
		}
	}
	status := ""
	clean := false
	if code == 200 && errText == "" {
		switch kind {
		case "hx":
			var r struct{ Return *int }
			if json.Unmarshal(body, &r) == nil && r.Return != nil && *r.Return == 0 {
				clean = true
			}
		case "vg":
			var r struct {
				Result struct {
					ReturnCode *int `json:"return_code"`
				}
			}
			if json.Unmarshal(body, &r) == nil && r.Result.ReturnCode != nil && *r.Result.ReturnCode == 0 {
				clean = true
			}
		case "s0":
			ev := probeSSE(string(body))
			if len(ev) > 0 && strings.HasPrefix(ev[len(ev)-1], "done ") && strings.Contains(ev[len(ev)-1], `"success": true`) {
				clean = true
			}
		}
	}
	if clean {
		status = "succeeded"
	} else {
		c.mu.Lock()
		c.answers[tag] = fmt.Sprintf("%d %s %q", code, errText, probeCut(string(body), 300))
		c.mu.Unlock()
		status = "?"
	}
	l.mu.Lock()
	o.sent, o.answered, o.code, o.err, o.lastSent, o.status = sent, time.Now(), code, errText, sent, status
	l.mu.Unlock()
}

func probeCut(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// probeSSE is the events of an SSE body as "name data".
func probeSSE(body string) []string {
	var out []string
	name, data := "", ""
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event:"):
			name = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			data += strings.TrimSpace(strings.TrimPrefix(line, "data:"))
		case line == "":
			if name != "" || data != "" {
				out = append(out, name+" "+data)
			}
			name, data = "", ""
		}
	}
	if name != "" || data != "" {
		out = append(out, name+" "+data)
	}
	return out
}

// settleCompat turns the compat calls that were not a clean success into
// what PostgreSQL says, and logs each: a probe's reading, not a check.
func settleCompat(t *testing.T, s *faultStack, l *faultLoad, c *probeClients) {
	rows, err := s.rows(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	byTag := map[string]pgOrder{}
	for _, r := range rows {
		byTag[r.tag] = r
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, o := range l.orders {
		a, ok := c.answers[o.tag]
		if !ok {
			continue
		}
		r, found := byTag[o.tag]
		t.Logf("compat %s on %s: answered %s; PostgreSQL: found %v, status %s, error %q", o.tag, o.host, a, found, r.status, r.err)
		if o.code == 200 {
			// Judged by hand from the log line above.
			o.status = r.status
		}
		// docs/compat.md, "Under faults": a surface's 500 for a request
		// refused before it was recorded, or withdrawn (canceled) after.
		if o.code == 500 && (!found || r.status == "canceled") {
			o.code = 503
		}
	}
}

func newProbeStack(t *testing.T) (*faultStack, *natsCluster, string) {
	root := t.TempDir()
	copyTool(t, "sh", filepath.Join(root, "sh"))
	books := t.TempDir()
	script := strings.ReplaceAll(strings.ReplaceAll(strings.ReplaceAll(strings.ReplaceAll(strings.ReplaceAll(faultScript,
		`"$3"`, `"$PROBE_LOCK"`), `"$2"`, `"$PROBE_MARKER"`), `$1`, `$PROBE_TAG`), `"$4"`, `""`), `"$5"`, `0.05`)
	doc := runbookDoc("Probe", "PROBE_TAG: tag\nPROBE_MARKER: marker\nPROBE_LOCK: lock", "  []", "", script)
	if err := os.WriteFile(filepath.Join(books, "Probe.md"), []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	opsTok, opsHash := auth.NewToken()
	var c *natsCluster
	s := newFaultStackOn(t, "ofp-", func(s *faultStack) string {
		// Pings every 2 s, 2 outstanding: a frozen node's routes and
		// clients are dropped after 4–6 s. orderly's accounts, as
		// deploy/nats: the NATS publisher in SUBMITTERS, each host's
		// workers in theirs.
		c = startNATSClusterAccountsConf(t, s.dir, 3, []string{"h1", "h2", "h3"}, "ping_interval: \"2s\"\nping_max: 2\n")
		s.creds = c.creds
		return c.url()
	}, func(conf string) string {
		conf = strings.Replace(conf, "nats:\n", "nats:\n  replicas: 3\n", 1)
		conf = strings.Replace(conf, "command_path: [/usr/bin, /bin]", fmt.Sprintf("command_path: [%q, /usr/bin, /bin]", root), 1)
		return conf + probeCompat(root, books, opsHash)
	})
	return s, c, opsTok
}

// TestProbeEveryClientOnNATSCluster: REST clients (sync and async, with
// keys), a NATS publisher, an httpexec client, a sync Vigrid client and a
// stage0 client at once, against two API replicas and four workers (h1
// with a standby) over a 3-node NATS cluster; then, one after another with
// recovery between: kill -9 of the orders stream's leader, SIGSTOP of a
// node for 25 s (past its routes' ping timeout: pings every 2 s here),
// kill -9 of h1's worker mid-order, PostgreSQL crash-restarted.
// checkContract judges it; a compat call that was not a clean success is
// logged with what PostgreSQL holds (ORDERLY_PROBE_KEEP=<dir> copies the
// logs there).
func TestProbeEveryClientOnNATSCluster(t *testing.T) {
	if os.Getenv("ORDERLY_PROBE") != "1" {
		t.Skip("probe")
	}
	began := time.Now()
	s, c, opsTok := newProbeStack(t)
	if keep := os.Getenv("ORDERLY_PROBE_KEEP"); keep != "" {
		t.Cleanup(func() { _ = exec.Command("cp", "-a", s.dir, keep).Run() })
	}
	s.startReplica()
	hosts := []string{"h1", "h2", "h3"}
	for _, h := range hosts {
		s.startWorker(h)
	}
	s.startWorker("h1") // a standby
	l := newFaultLoad(s, hosts...)
	l.retry, l.waitEvery = true, 2
	l.natsFor = map[string]bool{"s3": true}
	l.client.Timeout = 20 * time.Second
	l.start(3, faultPeriod)
	defer l.stop()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "ci", "roles": []string{"developer"},
		"iss": "dev-idp", "aud": "dev-api", "exp": time.Now().Add(2 * time.Hour).Unix()}).SignedString([]byte(probeStage0Secret))
	if err != nil {
		t.Fatal(err)
	}
	pc := &probeClients{l: l, ops: opsTok, jwt: tok, client: &http.Client{Timeout: 60 * time.Second}, answers: map[string]string{}}
	pc.start(t)
	defer pc.stop()
	l.waitStarts(t, 8, 90*time.Second)
	r := &faultRun{t: t, s: s, l: l, hosts: hosts}
	// Its own pings: the checks' connection must leave a frozen node.
	nc, err := queue.Connect(c.url(), "probe-check", append(c.apiOptions(), nats.PingInterval(time.Second), nats.MaxPingsOutstanding(2))...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	faultAll := func(what string) {
		for _, h := range hosts {
			r.fault(what, h)
		}
	}
	waitLeaders := func(old string) {
		_, _ = waitNewLeader(t, js, queue.OrdersStream, old)
		_, _ = waitNewLeader(t, js, "KV_"+queue.HostsBucket, old)
		for _, h := range hosts {
			waitConsumerLeader(t, js, queue.ConsumerName(h), old)
		}
		waitMetaLeader(t, js)
	}

	// 1. SIGKILL of the orders stream's leader.
	pause(t.Context(), 3*time.Second)
	old := streamLeader(t.Context(), js, queue.OrdersStream)
	t.Logf("fault 1: kill -9 %s, the leader of %s", old, queue.OrdersStream)
	s.note("kill -9 nats %s (orders leader)", old)
	c.node(old).kill9()
	waitLeaders(old)
	faultAll("leader " + old + " killed")
	pause(t.Context(), 5*time.Second)
	c.start(old)
	r.untilRecovered(time.Second, 30*time.Second, 5*time.Second)

	// 2. SIGSTOP of a node past its ping timeout (the current leader).
	frozen := streamLeader(t.Context(), js, queue.OrdersStream)
	if frozen == "" {
		frozen = c.names[1]
	}
	t.Logf("fault 2: SIGSTOP %s for 25 s", frozen)
	s.note("SIGSTOP nats %s", frozen)
	c.node(frozen).proc.signal(syscall.SIGSTOP)
	waitLeaders(frozen)
	faultAll("node " + frozen + " frozen")
	pause(t.Context(), 25*time.Second)
	c.node(frozen).proc.signal(syscall.SIGCONT)
	s.note("SIGCONT nats %s", frozen)
	faultAll("node " + frozen + " thawed")
	r.untilRecovered(time.Second, 30*time.Second, 5*time.Second)

	// 3. SIGKILL of a worker mid-order (h1, which has a standby).
	w, vtag := r.victim("h1", "3", true)
	t.Logf("fault 3: kill -9 the worker of h1 running %s", vtag)
	s.note("kill -9 worker %s running %s", w.name, vtag)
	w.signal(syscall.SIGKILL)
	w.waitExit(10 * time.Second)
	r.fault("worker killed", "h1")
	s.startWorker("h1")
	r.untilRecovered(time.Second, 30*time.Second, 5*time.Second)

	// 4. PostgreSQL crash-restart.
	t.Logf("fault 4: pg restart -m immediate")
	s.note("pg restart")
	s.pg.restartImmediate()
	faultAll("postgres restarted")
	r.untilRecovered(time.Second, 30*time.Second, 5*time.Second)

	pc.stop()
	l.stop()
	s.waitSubmitStreamEmpty(drainBound)
	t.Logf("drained in %s", s.waitDrained(drainBound).Round(10*time.Millisecond))
	settleCompat(t, s, l, pc)
	checkContract(t, s, l, nil)
	kinds := map[string]int{}
	for _, o := range l.snapshot() {
		kinds[o.submitter]++
	}
	t.Logf("probe ran %s; submissions per client %v", time.Since(began).Round(time.Second), kinds)
	for _, f := range r.faults {
		if next, ok := l.tails[f.host].firstStartAfter(f.at); ok {
			t.Logf("recovery %s on %s: %s", f.what, f.host, next.at.Sub(f.at).Round(10*time.Millisecond))
		}
	}
}

// TestProbeServeWithAJoinedWorker: orderly serve for host srv, a second host's worker
// (w2) joined to serve's embedded NATS with its credential, the retrying
// load on both, serve SIGKILLed and started again under it.
func TestProbeServeWithAJoinedWorker(t *testing.T) {
	if os.Getenv("ORDERLY_PROBE") != "1" {
		t.Skip("probe")
	}
	began := time.Now()
	dataDir := serveDataDir(t, "ofs-")
	dir := shortDir(t, "ofs-logs-", os.Getenv("ORDERLY_FAULTS_KEEP") != "")
	apiPort, natsPort := freePort(t), freePort(t)
	apiURL := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	s := &faultStack{t: t, dir: dir, apiURL: apiURL}
	t.Cleanup(s.dumpLogsOnFailure)
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + dataDir, fmt.Sprintf("ORDERLY_NATS__LISTEN=127.0.0.1:%d", natsPort),
		"ORDERLY_NATS__WORKERS=w2", "ORDERLY_NATS__LEASE_TTL=2s", "ORDERLY_NATS__HEARTBEAT=300ms", "ORDERLY_WORKER__KILL_GRACE=500ms",
		"ORDERLY_LIMITS__RATE_PER_IP=0", "ORDERLY_LIMITS__RATE_PER_PRINCIPAL=0"}
	serves := 0
	startServe := func() *faultProc {
		serves++
		name := fmt.Sprintf("serve-%d", serves)
		p := startFaultProc(t, name, filepath.Join(dir, name+".log"), env, orderlyBin, "serve", "--data-dir", dataDir,
			"--listen", fmt.Sprintf("127.0.0.1:%d", apiPort), "--host", "srv")
		waitHTTPOK(t, apiURL+"/readyz", 120*time.Second, p)
		s.mu.Lock()
		s.workers = append(s.workers, &faultWorker{faultProc: p, host: "srv"})
		s.mu.Unlock()
		return p
	}
	sv := startServe()
	tok, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	s.token = strings.TrimSpace(string(tok))
	var dsn string
	waitUntil(t, 30*time.Second, "serve's banner names its database", func() bool {
		b, _ := os.ReadFile(sv.log)
		if _, rest, ok := strings.Cut(string(b), "--database-url '"); ok {
			dsn, _, _ = strings.Cut(rest, "'")
			return true
		}
		return false
	})
	s.pool, err = postgres.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.pool.Close)
	startW2 := func() *faultWorker {
		s.mu.Lock()
		n := len(s.workers) + 1
		s.mu.Unlock()
		name := fmt.Sprintf("worker-w2-%d", n)
		p := startFaultProc(t, name, filepath.Join(dir, name+".log"),
			[]string{"PATH=/usr/bin:/bin", "HOME=" + dir, "ORDERLY_NATS__LEASE_TTL=2s", "ORDERLY_NATS__HEARTBEAT=300ms",
				"ORDERLY_WORKER__KILL_GRACE=500ms"},
			orderlyBin, "worker", "--host", "w2", "--nats-url", fmt.Sprintf("nats://127.0.0.1:%d", natsPort),
			"--nats-nkey", filepath.Join(dataDir, "nats-creds", "worker-w2.nk"), "--database-url", dsn)
		w := &faultWorker{faultProc: p, host: "w2"}
		s.mu.Lock()
		s.workers = append(s.workers, w)
		s.mu.Unlock()
		return w
	}
	startW2()
	hosts := []string{"srv", "w2"}
	l := newFaultLoad(s, hosts...)
	l.retry, l.waitEvery = true, 3
	// s4 publishes to orderly.submit.<host> with serve's submitter
	// credential.
	s.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	nk, err := nats.NkeyOptionFromSeed(filepath.Join(dataDir, "nats-creds", "submitter.nk"))
	if err != nil {
		t.Fatal(err)
	}
	l.natsFor = map[string]bool{"s4": true}
	l.natsOpts = []nats.Option{nk, nats.CustomInboxPrefix(queue.SubmitterInbox)}
	l.client.Timeout = 20 * time.Second
	l.start(4, faultPeriod)
	defer l.stop()
	l.waitStarts(t, 8, 90*time.Second)
	r := &faultRun{t: t, s: s, l: l, hosts: hosts}
	for i := range 3 {
		pause(t.Context(), 3*time.Second)
		t.Logf("kill -9 serve (%d)", i+1)
		s.note("kill -9 serve")
		sv.signal(syscall.SIGKILL)
		sv.waitExit(10 * time.Second)
		r.fault("serve killed", "srv")
		r.fault("serve killed", "w2")
		pause(t.Context(), time.Second)
		sv = startServe()
		s.note("serve back")
		r.untilRecovered(time.Second, 60*time.Second, 5*time.Second)
	}
	// Then a clean stop and start.
	s.note("SIGTERM serve")
	stopAt := time.Now()
	sv.signal(syscall.SIGTERM)
	if !sv.waitExit(60 * time.Second) {
		t.Errorf("serve did not stop within 60 s of SIGTERM")
	}
	stopped := time.Now()
	r.fault("serve stopped", "srv")
	r.fault("serve stopped", "w2")
	sv = startServe()
	r.untilRecovered(time.Second, 60*time.Second, 5*time.Second)
	l.stop()
	// A stop in order ends the waits under way at once: their 202 carries
	// the order as it stood (api/openapi.yaml, wait), not a wait run out.
	l.mu.Lock()
	for _, o := range l.orders {
		if o.wait && o.code == http.StatusAccepted && o.answered.After(stopAt) && o.answered.Before(stopped) {
			t.Logf("%s: ?wait=10 answered 202 by the stopping serve", o.tag)
			o.wait = false
		}
	}
	l.mu.Unlock()
	// What the NATS publisher had acked is recorded once the intake took
	// it (the submitter may not read ORDERLY_SUBMIT).
	waitUntil(t, drainBound, "every acked NATS submission recorded", func() bool {
		rows, err := s.rows(t.Context())
		if err != nil {
			return false
		}
		have := map[string]bool{}
		for _, r := range rows {
			have[r.tag] = true
		}
		for _, o := range l.snapshot() {
			if o.nats && o.accepted() && !have[o.tag] {
				return false
			}
		}
		return true
	})
	t.Logf("drained in %s", s.waitDrained(drainBound).Round(10*time.Millisecond))
	checkContract(t, s, l, nil)
	kinds := map[string]int{}
	for _, o := range l.snapshot() {
		if o.accepted() {
			kinds[o.submitter]++
		}
	}
	if kinds["s4"] == 0 {
		t.Errorf("the NATS publisher had nothing accepted: the probe did not test it")
	}
	t.Logf("probe ran %s; accepted submissions per client %v", time.Since(began).Round(time.Second), kinds)
	for _, f := range r.faults {
		if next, ok := l.tails[f.host].firstStartAfter(f.at); ok {
			t.Logf("recovery %s on %s: %s", f.what, f.host, next.at.Sub(f.at).Round(10*time.Millisecond))
		}
	}
}
