package main

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/natsembed"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// oneAccountStack is what the tests of host h2's worker seed forging h1's
// keys run on (the reply-subject route, decisions.md hA18): an embedded
// nats-server with natsembed's credentials for h1 and h2 in one account,
// as a cluster whose auth.conf predates the accounts
// (natsembed.Options.OneAccount; in their own accounts h2's answers never
// reach h1's subjects, natsembed's TestAnotherHostsRepliesStoreNothing),
// and an API on the API's seed. Its log (at level, log.level's) goes
// to the test's output and to logs.
type oneAccountStack struct {
	*stack // the API's
	creds  *natsembed.Credentials
	ns     *natsembed.Server
	w      *config.Watcher
	logs   *testenv.LogBuffer
	logger *slog.Logger
}

func newOneAccountStack(t *testing.T, level string) *oneAccountStack {
	t.Helper()
	creds, err := natsembed.EnsureCredentials(filepath.Join(t.TempDir(), "creds"), "srv", []string{"h1", "h2"})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := natsembed.Start(natsembed.Options{Dir: t.TempDir(), Port: -1, SyncAlways: true, Logger: testenv.Logger(t), Credentials: creds, OneAccount: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	logs := &testenv.LogBuffer{}
	logger := testenv.LoggerTo(io.MultiWriter(t.Output(), logs))
	dsn := testenv.Postgres(t)
	ov := testOverrides(dsn, ns.ClientURL())
	ov["nats.nkey"] = creds.API
	ov["log.level"] = level
	w, err := config.NewWatcherFilled("", nil, ov, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, sum := auth.NewToken()
	s, _ := upAPI(t, w, logger, tok, sum)
	s.dsn, s.natsURL = dsn, ns.ClientURL()
	return &oneAccountStack{stack: s, creds: creds, ns: ns, w: w, logs: logs, logger: logger}
}

// probe is a queue on the API's credential: it reads (and signs) as the
// API does.
func (o *oneAccountStack) probe(t *testing.T) *queue.Queue {
	t.Helper()
	opts, err := natsAuth(o.w.Current(), roleAPI)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := queue.Connect(o.ns.ClientURL(), "test-probe", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	q, err := openQueue(t.Context(), nc, o.w.Current(), roleAPI, nil)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// h2 connects with h2's worker seed, the forger's.
func (o *oneAccountStack) h2(t *testing.T) *nats.Conn {
	t.Helper()
	cfg := o.w.Current()
	cfg.Host, cfg.NATS.Nkey = "h2", o.creds.Workers["h2"]
	opts, err := natsAuth(cfg, roleWorker)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := queue.Connect(cfg.NATS.URL, "test-h2", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// forgeByReply has h2 store body (with hdr: a delete, a marker) on key
// of the hosts bucket through the reply-subject route: h2 writes it to
// its own heartbeat key, and a direct get of that answers on key's
// subject (with no_hdr for a value, with the headers otherwise).
func forgeByReply(h2 *nats.Conn, body string, hdr nats.Header, key string) error {
	heartbeat := "$KV." + queue.HostsBucket + ".info.h2"
	m := nats.NewMsg(heartbeat)
	m.Data, m.Header = []byte(body), hdr
	if _, err := h2.RequestMsg(m, 5*time.Second); err != nil {
		return fmt.Errorf("h2 writes its own heartbeat key: %w", err)
	}
	get := nats.NewMsg("$JS.API.DIRECT.GET.KV_" + queue.HostsBucket + "." + heartbeat)
	get.Reply = "$KV." + queue.HostsBucket + "." + key
	if hdr == nil {
		get.Data = []byte(`{"no_hdr":true}`)
	}
	if err := h2.PublishMsg(get); err != nil {
		return err
	}
	return h2.Flush()
}
