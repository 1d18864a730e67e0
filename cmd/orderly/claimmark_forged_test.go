package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestAnotherHostsSeedCannotForgeTheClaimMark: host h2's worker seed made
// the server store a claim mark of its choosing as h1's, by naming h1's
// mark subject as the reply subject of a direct get of its own heartbeat
// (decisions.md, hA18): permissions never look at a reply subject. At
// h1's next tenure every order PostgreSQL held queued below that mark
// (all of them) was canceled as restored from a backup instead of run.
// h1's worker now signs its mark with a key derived from its own seed
// and takes a mark it did not sign as no mark, saying so: the orders
// run, and its first claim writes its own mark over the forgery. A
// standby of h1 (same seed) takes the active worker's mark as its own.
// The bus is one account, as a cluster whose auth.conf predates the
// accounts (natsembed.Options.OneAccount): in their own accounts, h2's
// answers never reach h1's subjects (natsembed's
// TestAnotherHostsRepliesStoreNothing).
func TestAnotherHostsSeedCannotForgeTheClaimMark(t *testing.T) {
	ctx := t.Context()
	o := newOneAccountStack(t, "warn")
	s, creds, w, logs, logger := o.stack, o.creds, o.w, o.logs, o.logger
	marker := runsMarker(t)
	submit := func() uuid.UUID {
		t.Helper()
		code, body := s.do("POST", "/v1/orders", map[string]any{"host": "h1", "command": "sh",
			"args": []string{"-c", `echo x >> "$1"`, "_", marker}})
		if code != http.StatusAccepted {
			t.Fatalf("submit = %d, want 202: %s", code, body)
		}
		var o api.Order
		if err := json.Unmarshal(body, &o); err != nil {
			t.Fatal(err)
		}
		return o.ID
	}
	succeeded := func(id uuid.UUID) {
		t.Helper()
		if got := s.waitFor(id, time.Minute, terminal); got.Status != "succeeded" {
			why := ""
			if got.Result != nil && got.Result.Error != nil {
				why = *got.Result.Error
			}
			t.Fatalf("order %s: %s (%s), want succeeded", id, got.Status, why)
		}
	}
	// h1Worker starts a worker of h1 as `orderly worker --host h1
	// --nats-nkey worker-h1.nk` would.
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
	const ignored = "was not written with this worker's own NATS credential"

	// h1's worker and its standby: the active one claims and marks, the
	// standby takes the host and the mark.
	downActive := h1Worker()
	succeeded(submit())
	downStandby := h1Worker()
	downActive()
	succeeded(submit())
	downStandby()
	if strings.Contains(logs.String(), ignored) {
		t.Fatalf("h1's standby, with h1's seed, did not take the mark h1's worker wrote:\n%s", logs.String())
	}
	if n := runs(t, marker); n != 2 {
		t.Fatalf("ran %d orders before the forgery, want 2", n)
	}

	// h2's seed writes h1's claim mark: its own heartbeat key holds the
	// forged mark, and a direct get of it answers on h1's mark subject.
	h2 := o.h2(t)
	forged := `{"seq":1000000000,"stored":"2200-01-01T00:00:00Z"}`
	heartbeat := "$KV." + queue.HostsBucket + ".info.h2"
	if _, err := h2.Request(heartbeat, []byte(forged), 5*time.Second); err != nil {
		t.Fatalf("h2 writes its own heartbeat key: %v", err)
	}
	get := nats.NewMsg("$JS.API.DIRECT.GET.KV_" + queue.HostsBucket + "." + heartbeat)
	get.Reply = "$KV." + queue.MarksBucket + ".claimed.h1"
	get.Data = []byte(`{"no_hdr":true}`)
	if err := h2.PublishMsg(get); err != nil {
		t.Fatal(err)
	}
	if err := h2.Flush(); err != nil {
		t.Fatal(err)
	}
	probe := o.probe(t)
	testenv.WaitUntil(t, 20*time.Second, "h2's forged mark stored as h1's", func() bool {
		m, err := probe.ClaimMarkOf(ctx, "h1", nil)
		return err == nil && m.Seq == 1_000_000_000
	})

	// h1's next tenure, with orders queued: they run.
	queued := []uuid.UUID{submit(), submit()}
	h1Worker()
	for _, id := range queued {
		succeeded(id)
	}
	if n := runs(t, marker); n != 4 {
		t.Fatalf("ran %d orders, want 4", n)
	}
	if l := logs.String(); !strings.Contains(l, ignored) || !strings.Contains(l, "host=h1") {
		t.Fatalf("no ERROR naming h1 and its ignored mark:\n%s", l)
	}
	key, err := claimMarkKey(creds.Workers["h1"])
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, 20*time.Second, "h1's own mark written over the forgery", func() bool {
		m, err := probe.ClaimMarkOf(ctx, "h1", key)
		return err == nil && m.Seq > 0 && m.Seq < 1_000_000_000
	})
}
