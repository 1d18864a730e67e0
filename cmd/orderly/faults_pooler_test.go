package main

// Workers behind PgBouncer in transaction mode (hE18), as docs/scaling.md
// tells a fleet's operator to run them: many worker processes share a
// few server connections, each transaction on whichever is free.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderly-run/orderly/internal/testenv"
)

// poolerServerConns is the pooler's server connections per database and
// user in TestFaultsWorkersBehindPgBouncer: fewer than the workers.
const poolerServerConns = 3

// TestFaultsWorkersBehindPgBouncer runs eight worker processes through
// a real PgBouncer in transaction mode with three server connections,
// the API on its own direct connection, under REST load with retries:
// orders with 1.5 MiB of output (their result write streams it into a
// temporary table with COPY) and a long order spanning each fault among
// them. Half the workers' database_url names
// default_query_exec_mode=cache_describe, the other half say nothing
// (the store sees the pooler and chooses it). PgBouncer is then killed
// and started again, and PostgreSQL behind it crash-restarted, under
// load. Every host must run orders again after each fault with the same
// worker processes (none exits, none is restarted), the contract hold
// for every host (checkContract: each accepted order recorded once, run
// once, in per-host order, nothing lost), each large output be stored
// whole (its bytes, their SHA-256, not truncated), each long order
// succeed, and PostgreSQL never hold more connections of the workers
// than the pooler's server connections.
func TestFaultsWorkersBehindPgBouncer(t *testing.T) {
	s := newFaultStack(t)
	bouncer := testenv.StartPgBouncer(t, s.pg.dsn(), poolerServerConns)
	var hosts []string
	var workers []*faultWorker
	for i := range 8 {
		h := fmt.Sprintf("b%02d", i+1)
		mode := ""
		if i%2 == 0 {
			mode = "default_query_exec_mode=cache_describe"
		}
		hosts = append(hosts, h)
		workers = append(workers, s.startWorkerEnv(h, "ORDERLY_DATABASE_URL="+bouncer.DSN("orderly", mode)))
	}
	conns := watchPoolerConnections(t, s, bouncer)
	l := newFaultLoad(s, hosts...)
	l.retry = true
	// Four submitters at one order of 0.1 s each 150 ms: the hosts keep
	// up between faults, and a fault finds orders running on most.
	l.startRuns(4, 150*time.Millisecond, "0.1")
	defer l.stop()
	l.waitStarts(t, 3, 90*time.Second)
	r := &faultRun{t: t, s: s, l: l, hosts: hosts, expect: map[string]string{}}

	var extra poolerExtras
	recoveries := map[string]time.Duration{}
	for _, f := range []struct {
		what   string
		inject func()
	}{
		{"pgbouncer restart", bouncer.Restart},
		{"postgres restart behind pgbouncer", s.pg.restartImmediate},
	} {
		// Large outputs just before the fault, and a long order running
		// when it hits (its result written after it).
		for i, h := range hosts[:4] {
			extra.submit(t, l, h, fmt.Sprintf("big-%s-%d", strings.Fields(f.what)[0], i), "0.1", 3<<19)
		}
		long := extra.submit(t, l, hosts[4], "long-"+strings.Fields(f.what)[0], "5", 0)
		l.waitStarted(t, hosts[4], long, 30*time.Second)
		f.inject()
		for _, h := range hosts {
			r.fault(f.what, h)
		}
		recoveries[f.what] = fleetRecovered(r, 60*time.Second)
	}
	// And large outputs once more after the faults.
	for i, h := range hosts[4:] {
		extra.submit(t, l, h, fmt.Sprintf("big-after-%d", i), "0.1", 3<<19)
	}
	r.untilRecovered(0, 20*time.Second, 3*time.Second)
	l.stop()
	took := s.waitDrained(drainBound)
	t.Logf("drained in %s; slowest host's recovery: %v", took.Round(10*time.Millisecond), recoveries)
	checkContract(t, s, l, r.faults)
	extra.check(t, s)
	for _, w := range workers {
		if !w.alive() {
			t.Errorf("%s exited (log %s): a worker behind the pooler must outlive its faults", w.name, w.log)
		}
	}
	conns.check(t)
}

// poolerExtras are the orders TestFaultsWorkersBehindPgBouncer submits
// beside the load: large outputs and long orders, each checked by tag.
type poolerExtras struct {
	mu     sync.Mutex
	output map[string]int // tag → bytes of output it prints
	tags   []string
}

// submit sends to host an order of the load's script (its marker lines,
// so the contract check orders it with the host's others) that runs for
// dur and then prints size bytes of its tag's lines (none for 0), and
// returns its tag. The client retries it with its Idempotency-Key until
// answered, as the load does; it fails t unless accepted.
func (x *poolerExtras) submit(t *testing.T, l *faultLoad, host, tag, dur string, size int) string {
	t.Helper()
	script := faultScript
	args := []string{"-c", "", "_", tag, l.marker(host), l.lock(host), "", dur}
	if size > 0 {
		args = append(args, strconv.Itoa(size))
		script += `yes "$1" | head -c "$6"` + "\n"
	}
	args[1] = script
	body, _ := json.Marshal(map[string]any{"host": host, "command": "sh", "timeout_seconds": 120, "args": args})
	deadline := time.Now().Add(drainBound)
	for {
		code, errText, _, _ := l.send(l.s.apiURL, body, tag, false)
		if code == http.StatusAccepted {
			break
		}
		if (code != 0 && code != http.StatusServiceUnavailable) || time.Now().After(deadline) {
			t.Fatalf("order %s: HTTP %d %s", tag, code, errText)
		}
		pause(t.Context(), 100*time.Millisecond)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.output == nil {
		x.output = map[string]int{}
	}
	x.output[tag] = size
	x.tags = append(x.tags, tag)
	return tag
}

// check reads each extra order from PostgreSQL: succeeded, with its
// output stored whole.
func (x *poolerExtras) check(t *testing.T, s *faultStack) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tag := range x.tags {
		var status string
		var out, sum []byte
		var n *int64
		var truncated *bool
		err := s.pool.QueryRow(ctx, `SELECT status, coalesce(stdout, ''), stdout_bytes, stdout_truncated, stdout_sha256
			FROM orders WHERE args[4] = $1`, tag).Scan(&status, &out, &n, &truncated, &sum)
		if err != nil {
			t.Errorf("order %s: %v", tag, err)
			continue
		}
		want := bytes.Repeat([]byte(tag+"\n"), x.output[tag]/(len(tag)+1)+1)[:x.output[tag]]
		wantSum := sha256.Sum256(want)
		switch {
		case status != "succeeded":
			t.Errorf("order %s: %s, want succeeded", tag, status)
		case !bytes.Equal(out, want) || n == nil || *n != int64(len(want)) || truncated == nil || *truncated || !bytes.Equal(sum, wantSum[:]):
			t.Errorf("order %s: stdout of %d bytes (recorded %v, truncated %v, sha256 %x), want the %d bytes it printed (sha256 %x)",
				tag, len(out), deref(n), deref(truncated), sum, len(want), wantSum)
		}
	}
	t.Logf("%d orders with large outputs or long runs checked", len(x.tags))
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// poolerConnWatch samples, every 200 ms, the connections PostgreSQL
// holds for the workers (PgBouncer's server connections carry the name
// of the worker that used them last: it sets application_name for each
// client it lends one to) and PgBouncer's clients of the orderly
// database (its admin console's SHOW POOLS).
type poolerConnWatch struct {
	s      *faultStack
	b      *testenv.PgBouncer
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	peakServer int           // most connections PostgreSQL held for the workers at once
	peakClient int           // most clients PgBouncer held at once (active and waiting)
	peakWait   int           // most clients waiting for a server connection at once
	maxWait    time.Duration // longest wait of a client for a server connection
	samples    int
}

func watchPoolerConnections(t *testing.T, s *faultStack, b *testenv.PgBouncer) *poolerConnWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &poolerConnWatch{s: s, b: b, cancel: cancel}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		var admin *pgx.Conn
		defer func() {
			if admin != nil {
				admin.Close(context.Background())
			}
		}()
		for ctx.Err() == nil {
			var n int
			err := s.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
				WHERE backend_type = 'client backend' AND application_name LIKE 'orderly-worker-%'`).Scan(&n)
			if admin == nil {
				admin, _ = pgx.Connect(ctx, b.DSN("pgbouncer", "default_query_exec_mode=simple_protocol"))
			}
			var pool map[string]int
			if admin != nil {
				if pool = showPool(ctx, admin, "orderly"); pool == nil {
					admin.Close(ctx) // PgBouncer restarted: connect again
					admin = nil
				}
			}
			w.mu.Lock()
			if err == nil {
				w.peakServer = max(w.peakServer, n)
				w.samples++
			}
			if pool != nil {
				w.peakClient = max(w.peakClient, pool["cl_active"]+pool["cl_waiting"])
				w.peakWait = max(w.peakWait, pool["cl_waiting"])
				w.maxWait = max(w.maxWait, time.Duration(pool["maxwait"])*time.Second+time.Duration(pool["maxwait_us"])*time.Microsecond)
			}
			w.mu.Unlock()
			pause(ctx, 200*time.Millisecond)
		}
	}()
	t.Cleanup(w.cancelWait)
	return w
}

// showPool is the integer columns of SHOW POOLS's row for database db,
// nil when it cannot be read.
func showPool(ctx context.Context, admin *pgx.Conn, db string) map[string]int {
	rows, err := admin.Query(ctx, "SHOW POOLS")
	if err != nil {
		return nil
	}
	defer rows.Close()
	var out map[string]int
	for rows.Next() {
		v, err := rows.Values()
		if err != nil {
			return nil
		}
		row := map[string]int{}
		name := ""
		for i, f := range rows.FieldDescriptions() {
			switch x := v[i].(type) {
			case string:
				if f.Name == "database" {
					name = x
				}
				if n, err := strconv.Atoi(x); err == nil {
					row[f.Name] = n
				}
			case int32:
				row[f.Name] = int(x)
			case int64:
				row[f.Name] = int(x)
			}
		}
		if name == db {
			out = row
		}
	}
	if rows.Err() != nil {
		return nil
	}
	return out
}

func (w *poolerConnWatch) cancelWait() {
	w.cancel()
	w.wg.Wait()
}

// check ends the sampling, logs what it saw and fails t when PostgreSQL
// held more worker connections than the pooler's server connections.
func (w *poolerConnWatch) check(t *testing.T) {
	t.Helper()
	w.cancelWait()
	w.mu.Lock()
	defer w.mu.Unlock()
	t.Logf("PostgreSQL held at most %d connections for the workers (%d samples); PgBouncer held at most %d clients, "+
		"at most %d of them waiting for a server connection, the longest wait %s", w.peakServer, w.samples, w.peakClient, w.peakWait, w.maxWait.Round(time.Millisecond))
	if w.peakServer > poolerServerConns {
		t.Errorf("PostgreSQL held %d connections for the workers, more than the pooler's %d", w.peakServer, poolerServerConns)
	}
	if w.samples == 0 || w.peakClient == 0 {
		t.Errorf("the connections were never sampled (%d samples of PostgreSQL's, %d clients of PgBouncer's at most)", w.samples, w.peakClient)
	}
}

// TestAPIBehindAPoolerWarns runs an `orderly api` and a worker whose
// database_url goes through PgBouncer in transaction mode and says
// nothing of pgx's query mode: an order runs through both (each store
// saw the pooler and sends its statements unnamed), and the API warns,
// naming database_url, that its insert's fence cannot work there. The
// worker does not warn, nor does the stack's API on its direct
// connection.
func TestAPIBehindAPoolerWarns(t *testing.T) {
	s := newFaultStack(t)
	bouncer := testenv.StartPgBouncer(t, s.pg.dsn(), 1)
	via := "ORDERLY_DATABASE_URL=" + bouncer.DSN("orderly", "")
	base := "http://127.0.0.1:" + strconv.Itoa(freePort(t))
	p := startFaultProc(t, "api-pooled", filepath.Join(s.dir, "api-pooled.log"), append(s.env(), via), orderlyBin,
		"api", "--config", s.conf, "--listen", strings.TrimPrefix(base, "http://"))
	waitHTTPOK(t, base+"/readyz", 60*time.Second, p)
	w := s.startWorkerEnv("p1", via)

	body := `{"host":"p1","command":"echo","args":["through the pooler"]}`
	req, err := http.NewRequest("POST", base+"/v1/orders?wait=30", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Status string `json:"status"`
		Result *struct {
			Stdout struct {
				Content string `json:"content"`
			} `json:"stdout"`
		} `json:"result"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusOK ||
		got.Status != "succeeded" || got.Result == nil || got.Result.Stdout.Content != "through the pooler\n" {
		t.Fatalf("order through the pooler: HTTP %d, %+v (%v)", resp.StatusCode, got, err)
	}

	const warning = "database_url goes through a connection pooler"
	for _, c := range []struct {
		log  string
		want bool
	}{{p.log, true}, {s.api.log, false}, {w.log, false}} {
		b, err := os.ReadFile(c.log)
		if err != nil {
			t.Fatal(err)
		}
		line := ""
		for l := range strings.Lines(string(b)) {
			if strings.Contains(l, warning) {
				line = l
			}
		}
		switch {
		case c.want && (line == "" || !strings.Contains(line, "setting=database_url") || !strings.Contains(line, "level=WARN")):
			t.Errorf("%s: no warning naming database_url that its insert's fence needs a direct connection", filepath.Base(c.log))
		case !c.want && line != "":
			t.Errorf("%s warns of a pooler it is not behind: %s", filepath.Base(c.log), line)
		}
	}
}
