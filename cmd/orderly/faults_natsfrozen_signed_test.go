package main

// nats-server frozen under load while the workers sign their host's lease
// with their host's key (hA19) and another host's seed forges it (hE20).
// TestFaultsNATSFrozen runs an open nats-server: its workers have no
// key, so they run the unsigned lease; TestAnotherHostsSeedCannotTakeTheLease
// runs the signed lease against a forger, with no freeze. The two together
// were proved only by a queue test's silent TCP path
// (TestSignedHolderKeepsItsLeaseFromAForgerAfterASilence): this is the
// combination end to end, with the credentials and permissions serve's
// natsembed gives each role.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/orderly-run/orderly/internal/natsembed"
	"github.com/orderly-run/orderly/internal/queue"
)

// natsAuthConf is a nats-server authorization block with one nkey user per
// seed file, each with its role's permissions, as natsembed gives them to
// serve's embedded server (and deploy/nats/auth.conf spells them).
func natsAuthConf(t testing.TB, users map[string]*server.Permissions) string {
	t.Helper()
	var lines []string
	for seedFile, perms := range users {
		seed, err := os.ReadFile(seedFile)
		if err != nil {
			t.Fatal(err)
		}
		kp, err := nkeys.ParseDecoratedNKey(seed)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		// JSON is nats-server's configuration syntax too; the subjects
		// are quoted, so a $ in them is no variable.
		// Not HTML-escaped: nats-server reads no \u escape (">").
		var b strings.Builder
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(map[string]any{"nkey": pub, "permissions": map[string]any{
			"publish": map[string]any{"allow": perms.Publish.Allow}, "subscribe": map[string]any{"allow": perms.Subscribe.Allow}}}); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, "    "+strings.TrimSpace(b.String()))
	}
	return "authorization {\n  users: [\n" + strings.Join(lines, "\n") + "\n  ]\n}\n"
}

// TestFaultsNATSFrozenSigned is TestFaultsNATSFrozen's freezes of
// nats-server (4 s, 14 s and 4 s, under the retrying load on two API
// replicas, h1 with a standby) on a server that authenticates every
// process with its role's nkey and permissions: h1's workers sign its
// lease with h1's key. Throughout, h2's seed forges h1's lease through
// the reply-subject route (an unsigned value, a value with a signature
// h1's key did not make, a release naming the holder with a bad
// signature, a purge marker), so that its writes wait in the frozen
// server's socket and are stored at each thaw, when the server expires
// the lease: the case where a signed holder past its lease met a forged
// value and lost its host (hG19). Checked: the fault suite's contract
// (nothing accepted lost, run twice or out of order, no overlap on a
// host), every order succeeds (no worker died), no worker takes a host
// from a live instance nor loses its lease, the forgeries reached the key
// and the holder judged them by h1's key.
func TestFaultsNATSFrozenSigned(t *testing.T) {
	creds, err := natsembed.EnsureCredentials(filepath.Join(t.TempDir(), "creds"), "srv", []string{"h1", "h2"})
	if err != nil {
		t.Fatal(err)
	}
	s := newFaultStackOn(t, "ofk-", func(s *faultStack) string {
		auth := natsAuthConf(t, map[string]*server.Permissions{
			creds.API:           natsembed.APIPermissions(),
			creds.Workers["h1"]: natsembed.WorkerPermissions("h1"),
			creds.Workers["h2"]: natsembed.WorkerPermissions("h2"),
		})
		if err := os.WriteFile(filepath.Join(s.dir, "auth.conf"), []byte(auth), 0o644); err != nil {
			t.Fatal(err)
		}
		s.nats = newNATSServer(t, s.dir, "include auth.conf\n")
		s.nats.start()
		return s.nats.url()
	}, func(conf string) string {
		return strings.Replace(conf, "nats:\n", fmt.Sprintf("nats:\n  nkey: %q\n", creds.API), 1)
	})
	s.workerEnv = func(host string) []string { return []string{"ORDERLY_NATS__NKEY=" + creds.Workers[host]} }
	s.startReplica()

	connect := func(seed, inbox string) *nats.Conn {
		t.Helper()
		nk, err := nats.NkeyOptionFromSeed(seed)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(s.natsURL, nk, nats.CustomInboxPrefix(inbox), nats.MaxReconnects(-1),
			nats.ReconnectWait(100*time.Millisecond), nats.RetryOnFailedConnect(true))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	// The API's credential reads h1's lease as the hosts listing does.
	js, err := jetstream.New(connect(creds.API, queue.APIInbox))
	if err != nil {
		t.Fatal(err)
	}
	h2 := connect(creds.Workers["h2"], queue.WorkerInbox("h2"))
	heartbeat := "$KV." + queue.HostsBucket + ".info.h2"
	// forge stores body (with hdr) on h1's lease key: h2 writes it to its
	// own heartbeat key, and a direct get of that answers on h1's key.
	forge := func(body string, hdr nats.Header) error {
		m := nats.NewMsg(heartbeat)
		m.Data, m.Header = []byte(body), hdr
		if _, err := h2.RequestMsg(m, 5*time.Second); err != nil {
			return err
		}
		get := nats.NewMsg("$JS.API.DIRECT.GET.KV_" + queue.HostsBucket + "." + heartbeat)
		get.Reply = "$KV." + queue.HostsBucket + ".lease.h1"
		if hdr == nil {
			get.Data = []byte(`{"no_hdr":true}`)
		}
		return h2.PublishMsg(get)
	}
	var (
		forging  sync.WaitGroup
		stop     = make(chan struct{})
		forged   atomic.Int64 // forgeries h2's server answered
		unsent   atomic.Int64 // forgeries whose write of h2's own key went unanswered (the freezes)
		readBack atomic.Int64 // forged values the API's credential read as h1's lease
	)
	holder := func() string {
		kv, err := js.KeyValue(t.Context(), queue.HostsBucket)
		if err != nil {
			return ""
		}
		e, err := kv.Get(t.Context(), "lease.h1")
		if err != nil {
			return ""
		}
		v := string(e.Value())
		if strings.HasPrefix(v, "forger") {
			readBack.Add(1)
			return ""
		}
		instance, _, _ := strings.Cut(v, "\n")
		return instance
	}

	var freezes []natsFreeze
	r := runFaultScenarioLoad(t, s, map[string]int{"h1": 2, "h2": 1}, faultLoadShape{submitters: 3, period: faultPeriod,
		retry: true, waitEvery: 3, dur: "0.3", timeout: 15 * time.Second}, func(r *faultRun) {
		active := ""
		waitUntil(t, 30*time.Second, "h1's lease held", func() bool {
			active = holder()
			return active != ""
		})
		forging.Add(1)
		go func() {
			defer forging.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-t.Context().Done():
					return
				default:
				}
				if i%5 == 4 {
					if h := holder(); h != "" {
						active = h
					}
				}
				var err error
				switch i % 4 {
				case 0:
					err = forge("forger", nil)
				case 1:
					err = forge("forger\n"+strings.Repeat("0", 64), nil)
				case 2:
					err = forge("", nats.Header{"KV-Operation": {"DEL"}, queue.ReleasedHeader: {active},
						queue.ReleaseSignatureHeader: {strings.Repeat("0", 64)}})
				case 3:
					err = forge("", nats.Header{"KV-Operation": {"PURGE"}})
				}
				if err != nil {
					unsent.Add(1)
				} else {
					forged.Add(1)
				}
				pause(t.Context(), 25*time.Millisecond)
			}
		}()
		for _, d := range []time.Duration{4 * time.Second, 14 * time.Second, 4 * time.Second} {
			from := time.Now()
			r.s.nats.proc.signal(syscall.SIGSTOP)
			r.s.note("nats-server frozen for %s", d)
			pause(t.Context(), d)
			r.s.nats.proc.signal(syscall.SIGCONT)
			r.s.note("nats-server thawed")
			freezes = append(freezes, natsFreeze{from, time.Now()})
			r.fault("nats thawed", "h1")
			r.fault("nats thawed", "h2")
			r.untilRecovered(0, 20*time.Second, 2*time.Second)
		}
		close(stop)
		forging.Wait()
	})
	checkFrozenAnswers(t, r.l.answersSoFar(), freezes)
	t.Logf("forgeries stored on h1's lease: %d answered, %d unanswered (in a freeze); read back as h1's lease %d times",
		forged.Load(), unsent.Load(), readBack.Load())
	if forged.Load() == 0 {
		t.Fatal("h2's seed forged nothing: the test proved nothing")
	}
	if readBack.Load() == 0 {
		t.Error("no forged value was read as h1's lease: the forgeries did not reach the key")
	}
	checkNoTakeoverButRetakes(t, s)
	rows, err := s.rows(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range rows {
		if o.status != "succeeded" {
			t.Errorf("order %s (%s) on %s ended %s: %s", o.tag, o.id, o.host, o.status, o.err)
		}
	}
	judged := false
	for _, w := range s.liveWorkers("h1") {
		b, err := os.ReadFile(w.log)
		if err != nil {
			t.Fatal(err)
		}
		judged = judged || strings.Contains(string(b), "written by another NATS credential than this host's")
		for line := range strings.Lines(string(b)) {
			if strings.Contains(line, "host lease lost") {
				t.Errorf("%s lost h1's lease: %s", w.name, strings.TrimSpace(line))
			}
		}
		t.Logf("%s: %d forgeries taken back within the lease, %d past it (lapsed); %d waits on its contact after a silence",
			w.name, strings.Count(string(b), "while this worker held it: taken back"),
			strings.Count(string(b), "had lapsed and was written by another NATS credential"),
			strings.Count(string(b), "the NATS server answers again after a silence"))
	}
	if !judged {
		t.Error("no worker of h1 judged a forged lease by h1's key: the workers do not sign (no key?)")
	}
}

// checkNoTakeoverButRetakes is checkNoTakeover, but for a host whose
// holder had ended its tenure itself to take the host again (a delivery
// gap, lost acks: it releases and waits like a standby) before the
// takeover: that holder held nothing then. Under the forger its release
// is followed by a forged value, its own try waits a lease like any
// standby's, and the standby may win (1 run in 7; the holder idle, no
// order interrupted, which the check of every order's status proves).
func checkNoTakeoverButRetakes(t *testing.T, s *faultStack) {
	t.Helper()
	s.mu.Lock()
	workers := append([]*faultWorker(nil), s.workers...)
	s.mu.Unlock()
	logs := make([]string, len(workers))
	byInstance := map[string]string{} // instance → its worker's log
	for i, w := range workers {
		b, err := os.ReadFile(w.log)
		if err != nil {
			t.Fatal(err)
		}
		logs[i] = string(b)
		if m := instanceRE.FindStringSubmatch(logs[i]); m != nil {
			byInstance[m[1]] = logs[i]
		}
	}
	for i, w := range workers {
		for line := range strings.Lines(logs[i]) {
			if !strings.Contains(line, `msg="took the host over"`) {
				continue
			}
			self, prev := instanceRE.FindStringSubmatch(line), previousOwnerRE.FindStringSubmatch(line)
			if self == nil || prev == nil || prev[1] == self[1] || prev[1] == `""` {
				continue
			}
			at, gaveUp := logTime(line), false
			for pl := range strings.Lines(byInstance[prev[1]]) {
				if strings.Contains(pl, "stopped consuming the host's orders; taking the host again") && !logTime(pl).After(at) {
					gaveUp = true
				}
			}
			if gaveUp {
				t.Logf("%s took host %s from a holder that had ended its tenure to take the host again: %s", w.name, w.host, strings.TrimSpace(line))
				continue
			}
			t.Errorf("%s took host %s from a live worker: %s", w.name, w.host, strings.TrimSpace(line))
		}
	}
}

// logTime is the time= of a log line, zero without one.
func logTime(line string) time.Time {
	_, rest, ok := strings.Cut(line, "time=")
	if !ok {
		return time.Time{}
	}
	v, _, _ := strings.Cut(rest, " ")
	at, _ := time.Parse(time.RFC3339Nano, v)
	return at
}
