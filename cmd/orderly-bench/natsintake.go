package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsIntakeHosts is how many hosts (without a worker) the NATS
// submissions are spread over: the intake runs hosts in parallel and each
// host's submissions one at a time (docs/decisions.md, "NATS intake").
const natsIntakeHosts = 8

// natsIntake measures how fast the API takes up NATS submissions: n
// submissions published asynchronously to orderly.submit.<host>, each
// answered on Orderly-Reply; the rate is n over the time from the first
// publish to the last answer. First with serve's own API as the only
// replica, then with two `orderly api` processes beside it on the same
// NATS and PostgreSQL. Only one replica receives at a time, so three
// replicas are for failover, not for speed.
func natsIntake(ctx context.Context, srv *server, o options, rep *report) error {
	if o.natsIntake <= 0 {
		return nil
	}
	if srv.natsURL == "" || srv.dsn == "" {
		return errors.New("nats intake: serve's banner did not give its NATS URL and database")
	}
	nc, err := benchNATS(srv, "submitter.nk")
	if err != nil {
		return err
	}
	defer nc.Close()

	progress(fmt.Sprintf("nats intake: %d submissions over %d hosts, 1 API replica (serve's)", o.natsIntake, natsIntakeHosts))
	one, err := intakeRun(ctx, nc, srv.token, o.natsIntake, "r1")
	if err != nil {
		return err
	}
	progress(fmt.Sprintf("nats intake: %.0f submissions/s with 1 replica", one))

	progress("nats intake: starting two `orderly api` replicas beside serve")
	stop, err := startAPIReplicas(ctx, srv, o.bin, 2)
	defer stop()
	if err != nil {
		return err
	}
	three, err := intakeRun(ctx, nc, srv.token, o.natsIntake, "r3")
	if err != nil {
		return err
	}
	progress(fmt.Sprintf("nats intake: %.0f submissions/s with 3 replicas", three))

	how := fmt.Sprintf("%d async publishes to orderly.submit.<host> over %d hosts without a worker, first publish to last Orderly-Reply answer",
		o.natsIntake, natsIntakeHosts)
	rep.row("NATS intake rate, 1 API replica", fmt.Sprintf("%.0f submissions/s", one), "(measured)", nil)
	rep.row("NATS intake rate, 3 API replicas", fmt.Sprintf("%.0f submissions/s", three), "(measured)", nil)
	rep.detail("NATS intake", fmt.Sprintf("1 replica %.0f/s, 3 replicas %.0f/s", one, three),
		how+"; one pinned replica receives at a time, the others stand by")
	return nil
}

// benchNATS connects to serve's NATS with the credential of a role (the
// file in <data-dir>/nats-creds), or without one when serve uses an
// external NATS and wrote none, and with the TLS files of the
// environment's nats.tls_* (natsTLSFromEnv).
func benchNATS(srv *server, seed string) (*nats.Conn, error) {
	opts := natsTLSFromEnv(os.Getenv)
	if path := filepath.Join(srv.dir, "nats-creds", seed); fileExists(path) {
		opt, err := nats.NkeyOptionFromSeed(path)
		if err != nil {
			return nil, fmt.Errorf("nats credential %s: %w", path, err)
		}
		opts = append(opts, opt)
	}
	nc, err := nats.Connect(srv.natsURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to serve's NATS: %w", err)
	}
	return nc, nil
}

// natsTLSFromEnv is the connection options of ORDERLY_NATS__TLS_CA,
// ORDERLY_NATS__TLS_CERT and ORDERLY_NATS__TLS_KEY, the settings serve and
// the bench's `orderly api` and `orderly worker` processes read from the
// environment the bench passes on: against a NATS with TLS from a CA of
// one's own (an external nats.url, or serve's nats.listen_tls_cert), and
// one that asks for client certificates, the bench's own connection
// failed where theirs succeeded. nats.go reports a bad file when it
// connects.
func natsTLSFromEnv(getenv func(string) string) []nats.Option {
	var opts []nats.Option
	if ca := getenv("ORDERLY_NATS__TLS_CA"); ca != "" {
		opts = append(opts, nats.RootCAs(ca))
	}
	if crt, key := getenv("ORDERLY_NATS__TLS_CERT"), getenv("ORDERLY_NATS__TLS_KEY"); crt != "" || key != "" {
		opts = append(opts, nats.ClientCert(crt, key))
	}
	return opts
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// intakeRun publishes n submissions and returns submissions per second up
// to the last answer. Every answer must be an accepted order.
func intakeRun(ctx context.Context, nc *nats.Conn, token string, n int, tag string) (float64, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(512))
	if err != nil {
		return 0, err
	}
	inbox := "_INBOX.bench-intake-" + tag
	var answered, refused atomic.Int64
	var firstRefusal atomic.Value
	done := make(chan struct{})
	sub, err := nc.Subscribe(inbox, func(m *nats.Msg) {
		var a struct {
			Order *struct{ ID string } `json:"order"`
			Error *struct{ Code, Message string }
		}
		if json.Unmarshal(m.Data, &a) != nil || a.Order == nil {
			if refused.Add(1) == 1 {
				firstRefusal.Store(string(m.Data))
			}
		}
		if answered.Add(1) == int64(n) {
			close(done)
		}
	})
	if err != nil {
		return 0, fmt.Errorf("subscribe to the answers: %w", err)
	}
	defer sub.Unsubscribe()
	body := []byte(`{"command":"true"}`)
	t0 := time.Now()
	for i := range n {
		m := nats.NewMsg(fmt.Sprintf("orderly.submit.nats-%d", i%natsIntakeHosts))
		m.Header.Set("Authorization", "Bearer "+token)
		m.Header.Set("Orderly-Reply", inbox)
		m.Header.Set("Nats-Msg-Id", fmt.Sprintf("bench-%s-%d", tag, i))
		m.Data = body
		if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(30*time.Second)); err != nil {
			return 0, fmt.Errorf("publish submission %d: %w", i, err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		return 0, errors.New("nats intake: publishes not acknowledged within 2 minutes")
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		return 0, fmt.Errorf("nats intake: %d of %d submissions answered within 5 minutes", answered.Load(), n)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	d := time.Since(t0)
	if r := refused.Load(); r > 0 {
		return 0, fmt.Errorf("nats intake: %d submissions refused, e.g. %v", r, firstRefusal.Load())
	}
	return float64(n) / d.Seconds(), nil
}

// startAPIReplicas starts count `orderly api` processes on serve's NATS
// (with the API credential) and PostgreSQL, waits until they listen, and
// returns how to stop them.
func startAPIReplicas(ctx context.Context, srv *server, bin string, count int) (func(), error) {
	ch := &children{}
	stop := ch.stop
	env := append(os.Environ(), "ORDERLY_DATABASE_URL="+srv.dsn, "ORDERLY_NATS__URL="+srv.natsURL,
		"ORDERLY_LISTEN=127.0.0.1:0", "ORDERLY_LOG__LEVEL=info")
	if path := filepath.Join(srv.dir, "nats-creds", "api.nk"); fileExists(path) {
		env = append(env, "ORDERLY_NATS__NKEY="+path)
	}
	for _, kv := range benchEnv {
		if k, _, _ := strings.Cut(kv, "="); os.Getenv(k) == "" {
			env = append(env, kv)
		}
	}
	for i := range count {
		cmd := exec.Command(bin, "api")
		cmd.Env = env
		ready := make(chan struct{})
		var once sync.Once
		listening := func(line string) {
			if strings.Contains(line, "api listening") {
				once.Do(func() { close(ready) })
			}
		}
		if err := ch.start(cmd, fmt.Sprintf("api-%d", i+1), listening); err != nil {
			return stop, err
		}
		select {
		case <-ready:
		case <-time.After(60 * time.Second):
			return stop, fmt.Errorf("orderly api replica %d did not start within 60s", i+1)
		case <-ctx.Done():
			return stop, ctx.Err()
		}
	}
	return stop, nil
}
