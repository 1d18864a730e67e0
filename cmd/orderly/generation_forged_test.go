package main

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestAWorkerSeedCannotForgeThePublishGeneration: host h2's worker seed
// made the server store a publish generation of its choosing, as it did
// a claim mark (hA18's route: a direct get of its own heartbeat answered
// on the generation's subject). At 2^63-1 the API found a restore of
// PostgreSQL at every comparison (an ERROR each second, its orders not
// yet published canceled rather than published) and every raise of the
// generation failed (bigint out of range). The API now signs the
// generation with a key derived from its own seed and takes one it did
// not sign as none, saying so: no restore is found, and its next raise
// writes its own over the forgery. Both keys are forged: the bare one
// an API without the signature read, and the signed one.
// The bus is one account, as a cluster whose auth.conf predates the
// accounts (natsembed.Options.OneAccount): in their own accounts, h2's
// answers never reach the generation's subject (natsembed's
// TestAnotherHostsRepliesStoreNothing).
func TestAWorkerSeedCannotForgeThePublishGeneration(t *testing.T) {
	ctx := t.Context()
	o := newOneAccountStack(t, "warn")
	s, logs := o.stack, o.logs
	submit := func() {
		t.Helper()
		// No worker runs h1: the order's publish is what clears its mark
		// and has the API compare and raise the generation.
		if code, body := s.do("POST", "/v1/orders", map[string]any{"host": "h1", "command": "true"}); code != http.StatusAccepted {
			t.Fatalf("submit = %d, want 202: %s", code, body)
		}
	}
	probe := o.probe(t) // signs with the API's key, as the API
	submit()
	var before uint64
	var err error
	testenv.WaitUntil(t, 20*time.Second, "the API's signed generation", func() bool {
		before, err = probe.PostgresMark(ctx)
		return err == nil && before > 0
	})

	h2 := o.h2(t)
	const far = "9223372036854775807"
	heartbeat := "$KV." + queue.HostsBucket + ".info.h2"
	kv, err := probe.JetStream().KeyValue(ctx, queue.MarksBucket)
	if err != nil {
		t.Fatal(err)
	}
	for key, forged := range map[string]string{
		"postgres.generation":        far,
		"postgres.signed_generation": `{"generation":` + far + `,"sig":"00"}`,
	} {
		if _, err := h2.Request(heartbeat, []byte(forged), 5*time.Second); err != nil {
			t.Fatalf("h2 writes its own heartbeat key: %v", err)
		}
		get := nats.NewMsg("$JS.API.DIRECT.GET.KV_" + queue.HostsBucket + "." + heartbeat)
		get.Reply = "$KV." + queue.MarksBucket + "." + key
		get.Data = []byte(`{"no_hdr":true}`)
		if err := h2.PublishMsg(get); err != nil {
			t.Fatal(err)
		}
		testenv.WaitUntil(t, 20*time.Second, "h2's forgery stored as "+key, func() bool {
			e, err := kv.Get(ctx, key)
			return err == nil && string(e.Value()) == forged
		})
	}

	// The next raise (after this submission's publish) writes over it.
	submit()
	testenv.WaitUntil(t, 20*time.Second, "the API's own generation written over the forgery", func() bool {
		g, err := probe.PostgresMark(ctx)
		return err == nil && g > before && g < 1<<40
	})
	l := logs.String()
	if !strings.Contains(l, "the publish generation in NATS was not written with the API's own NATS credential") {
		t.Fatalf("no ERROR for the forged generation:\n%s", l)
	}
	if strings.Contains(l, "restored from a backup") {
		t.Fatalf("the forged generation was taken for a restore of PostgreSQL:\n%s", l)
	}
	if code, body := s.do("GET", "/v1/status", nil); code != http.StatusOK || strings.Contains(string(body), "postgres_restored") {
		t.Fatalf("/v1/status = %d %s, want no restore", code, body)
	}
}

// TestServesAPISignsThePublishGenerationWithTheAPISeed: serve's API signs
// the publish generation with the key of the API seed it writes
// (api.nk), which an extra `orderly api` connects with, not with its own
// connection's (serve.nk): an extra API checks what serve's signed.
func TestServesAPISignsThePublishGenerationWithTheAPISeed(t *testing.T) {
	p := startBusServe(t, serveDataDir(t, "orderly-gen-"), nil)
	if code, b := p.do(t, "POST", "/v1/orders", map[string]any{"host": "srv", "command": "true"}); code != http.StatusAccepted {
		t.Fatalf("submit: %d %s", code, b)
	}
	ctx := t.Context()
	q, err := queue.Bind(ctx, dialBus(t, p.natsURL, filepath.Join(p.creds, "api.nk"), queue.APIInbox).nc, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	apiKey, err := generationKey(filepath.Join(p.creds, "api.nk"))
	if err != nil {
		t.Fatal(err)
	}
	serveKey, err := generationKey(filepath.Join(p.creds, "serve.nk"))
	if err != nil {
		t.Fatal(err)
	}
	q.SignGenerations(apiKey)
	testenv.WaitUntil(t, 20*time.Second, "serve's generation checked with api.nk's key", func() bool {
		g, err := q.PostgresMark(ctx)
		return err == nil && g > 0
	})
	q.SignGenerations(serveKey)
	if g, err := q.PostgresMark(ctx); err != nil || g != 0 {
		t.Fatalf("serve's generation checked with serve.nk's key: %d %v, want none", g, err)
	}
}
