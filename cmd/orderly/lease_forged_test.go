package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestAnotherHostsSeedCannotTakeTheLease: host h2's worker seed made the
// server store a body of its choosing on h1's lease key, by naming it as
// the reply subject of a direct get of its own heartbeat (decisions.md,
// hA18): h1's worker, finding its renewal refused and the key naming
// someone else, stopped its claims and ended its tenure; repeated, h1's
// orders waited. h1's workers now sign the lease with h1's key: the
// holder takes a value it did not sign back at once, with an ERROR naming
// the host, and h1's standby (same seed) takes neither a forged value for
// a renewal, nor a forged release or expiry marker for a free key. Here
// h2's seed writes h1's lease over and over (an unsigned value, one with
// a signature of another key, a delete naming the holder as its releaser,
// an expiry marker; and h1's heartbeat, which is not signed) for three
// leases while h1's orders run: they all run, in order, on the active
// worker, which never loses the host; the standby takes it only at the
// holder's real release.
// The bus is one account, as a cluster whose auth.conf predates the
// accounts (natsembed.Options.OneAccount): in their own accounts, h2's
// answers never reach h1's subjects (natsembed's
// TestAnotherHostsRepliesStoreNothing).
func TestAnotherHostsSeedCannotTakeTheLease(t *testing.T) {
	ctx := t.Context()
	o := newOneAccountStack(t, "info")
	s, creds, w, logs, logger := o.stack, o.creds, o.w, o.logs, o.logger
	marker := filepath.Join(runsMarker(t), "..", "order")
	submit := func(i int) uuid.UUID {
		t.Helper()
		code, body := s.do("POST", "/v1/orders", map[string]any{"host": "h1", "command": "sh",
			"args": []string{"-c", `echo "$2" >> "$1"; sleep 0.2`, "_", marker, fmt.Sprint(i)}})
		if code != http.StatusAccepted {
			t.Fatalf("submit = %d, want 202: %s", code, body)
		}
		var o api.Order
		if err := json.Unmarshal(body, &o); err != nil {
			t.Fatal(err)
		}
		return o.ID
	}
	succeeded := func(id uuid.UUID) api.Order {
		t.Helper()
		got := s.waitFor(id, time.Minute, terminal)
		if got.Status != "succeeded" {
			why := ""
			if got.Result != nil && got.Result.Error != nil {
				why = *got.Result.Error
			}
			t.Fatalf("order %s: %s (%s), want succeeded", id, got.Status, why)
		}
		return got
	}
	h1Worker := func() (down func()) {
		t.Helper()
		cfg := w.Current()
		cfg.Host, cfg.NATS.Nkey = "h1", creds.Workers["h1"]
		b, err := openBackendAs(ctx, cfg, "test-h1", roleWorker, logger)
		if err != nil {
			t.Fatal(err)
		}
		wr, err := startWorker(ctx, cfg, b, logger, nil)
		if err != nil {
			b.close()
			t.Fatal(err)
		}
		return stopOnce(t, func() { _ = wr.stop(); b.close() })
	}
	probe := o.probe(t)
	hosts, err := probe.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}

	// h1's active worker, then its standby, waiting.
	downActive := h1Worker()
	succeeded(submit(0))
	active, err := probe.LeaseHolder(ctx, "h1")
	if err != nil || active == "" {
		t.Fatalf("h1's lease holder = %q, %v", active, err)
	}
	downStandby := h1Worker()
	defer downStandby()
	var standby string
	testenv.WaitUntil(t, 20*time.Second, "h1's standby reported", func() bool {
		_, sb, err := probe.WorkersOf(ctx, "h1")
		standby = sb["h1"].Instance
		return err == nil && standby != ""
	})

	// h2's seed writes h1's lease key, in turns, for three leases and
	// until h1's orders have run: its own heartbeat key holds the
	// forgery, and a direct get of it answers on h1's lease subject (with
	// no_hdr for a value, with the headers for a delete or a marker).
	h2 := o.h2(t)
	forgeries := []struct {
		body string
		hdr  nats.Header
		key  string // of h1's, in the hosts bucket
	}{
		{"forger", nil, "lease.h1"},
		{"forger\n" + strings.Repeat("0", 64), nil, "lease.h1"},
		{"", nats.Header{"KV-Operation": {"DEL"}, queue.ReleasedHeader: {active}, queue.ReleaseSignatureHeader: {strings.Repeat("0", 64)}}, "lease.h1"},
		{"", nats.Header{"KV-Operation": {"PURGE"}}, "lease.h1"},
		{`{"host":"h1","instance":"forger"}`, nil, "info.h1"},
	}
	var (
		forging sync.WaitGroup
		stop    = make(chan struct{})
		seen    atomic.Int64 // forged values the API read as h1's lease
		ferr    atomic.Value
	)
	forging.Add(1)
	go func() {
		defer forging.Done()
		end := time.Now().Add(3 * 2 * time.Second) // three leases (nats.lease_ttl 2s)
		for i := 0; ; i++ {
			select {
			case <-stop:
				if time.Now().After(end) {
					return
				}
			default:
			}
			f := forgeries[i%len(forgeries)]
			if err := forgeByReply(h2, f.body, f.hdr, f.key); err != nil {
				ferr.Store(err)
				return
			}
			if e, err := hosts.Get(ctx, "lease.h1"); err == nil && strings.HasPrefix(string(e.Value()), "forger") {
				seen.Add(1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	const n = 12
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = submit(i + 1)
	}
	done := make([]api.Order, n)
	for i, id := range ids {
		done[i] = succeeded(id)
	}
	close(stop)
	forging.Wait()
	if err, _ := ferr.Load().(error); err != nil {
		t.Fatal(err)
	}
	if seen.Load() == 0 {
		t.Fatal("no forged value was ever read as h1's lease: the forgery did not reach the key")
	}
	t.Logf("forged values read as h1's lease: %d", seen.Load())
	for i := 1; i < n; i++ {
		t.Logf("order %d started %v after order %d finished", i+1, done[i].StartedAt.Sub(*done[i-1].FinishedAt).Round(time.Millisecond), i)
	}
	b, err := os.ReadFile(marker)
	if err != nil {
		t.Fatal(err)
	}
	want := "0\n"
	for i := 1; i <= n; i++ {
		want += fmt.Sprintf("%d\n", i)
	}
	if string(b) != want {
		t.Fatalf("h1 ran its orders as\n%s\nwant, in order:\n%s", b, want)
	}
	l := logs.String()
	if !strings.Contains(l, "the host lease was written by another NATS credential than this host's") || !strings.Contains(l, "host=h1") {
		t.Fatalf("no ERROR naming h1 and the other credential that wrote its lease:\n%s", l)
	}
	for _, line := range strings.Split(l, "\n") {
		if strings.Contains(line, "host lease lost") || strings.Contains(line, standby) && strings.Contains(line, "took the host over") {
			t.Fatalf("h1's holder lost the host, or its standby took it, under h2's forgeries: %s", line)
		}
	}

	// The holder's real release hands the host to the standby at once,
	// once the holder has taken its key back from the last forgery (a
	// release over a forged delete is a delete the standby leaves to a
	// holder for a lease).
	testenv.WaitUntil(t, 20*time.Second, "h1's holder's key back", func() bool {
		holder, err := probe.LeaseHolder(ctx, "h1")
		return err == nil && holder == active
	})
	downActive()
	succeeded(submit(n + 1))
	if l := logs.String(); !strings.Contains(l, "freed=released") {
		t.Fatalf("the standby did not take the host at its holder's signed release:\n%s", l)
	}
}
