package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
	"github.com/orderly-run/orderly/worker/executor"
	"github.com/orderly-run/orderly/worker/hostpolicy"
)

// handsRun is one run of orders flowing on one host while an operator
// changes JetStream by hand: a REST and a NATS submitter, a worker (bound,
// as `orderly worker` is: it creates no stream) running a long order with
// a backlog behind it.
type handsRun struct {
	t    *testing.T
	e    *apiEnv
	js   jetstream.JetStream // the operator's
	sub  *nats.Conn          // the NATS submitter's
	dir  string
	host string
	// labels in submission order, and the accepted orders by label.
	labels []string
	ids    map[string]uuid.UUID
}

func newHandsRun(t *testing.T) *handsRun {
	return newHandsRunLogging(t, testenv.Logger(t))
}

// newHandsRunLogging is newHandsRun with the API and the worker logging
// to logger.
func newHandsRunLogging(t *testing.T, logger *slog.Logger) *handsRun {
	ns := testenv.NATSServer(t, &server.Options{})
	e := newAPIEnv(t, envOptions{natsURL: ns.ClientURL(), lost: time.Second, logger: logger})
	r := &handsRun{t: t, e: e, js: testenv.JetStream(t, ns.ClientURL(), "operator"), dir: t.TempDir(), host: "hands",
		ids: map[string]uuid.UUID{}}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	r.sub = nc
	startBoundWorker(t, e, ns.ClientURL(), r.host)
	return r
}

// startBoundWorker runs a worker for host on a connection of its own and
// a queue bound as `orderly worker` binds it (queue.Bind): unlike the
// harness's workers, which share the API's queue, it makes no stream or
// bucket again.
func startBoundWorker(t *testing.T, e *apiEnv, url, host string) {
	t.Helper()
	nc, err := queue.Connect(url, "worker-"+host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	wq, err := queue.Bind(testenv.Context(t), nc, queue.Options{AckWait: 2 * time.Second, LeaseTTL: 2 * time.Second, Logger: e.logger()})
	if err != nil {
		t.Fatal(err)
	}
	hp, err := hostpolicy.FromConfig(config.Default())
	if err != nil {
		t.Fatal(err)
	}
	w := worker.New(worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: 2 * time.Second,
		ShutdownGrace: 5 * time.Second}, e.store, wq, hp, executor.New(e.logger()), e.logger())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("worker %s: %v", host, err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("worker %s did not stop", host)
		}
	})
}

// script is the order that appends label to the run's log, then runs
// more (a shell snippet, "" for none).
func (r *handsRun) script(label, more string) map[string]any {
	return map[string]any{"host": r.host, "command": "sh", "timeout_seconds": 120,
		"args": []string{"-c", "echo " + label + " >> " + filepath.Join(r.dir, "log") + "; " + more}}
}

// rest submits label's order over REST, again while the answer is a 503
// (for up to 30 s), and records it.
func (r *handsRun) rest(label, more string) {
	r.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, b := r.e.do("alice", "POST", "/v1/orders", r.script(label, more))
		if code == http.StatusAccepted {
			var o api.Order
			if err := json.Unmarshal(b, &o); err != nil {
				r.t.Fatal(err)
			}
			r.accepted(label, o.ID)
			return
		}
		if code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			r.t.Fatalf("REST submission %s: %d %s", label, code, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// overNATS submits label's order as a careful NATS submitter does: a
// JetStream publish with its Nats-Msg-Id, again until the stream takes
// it (for up to 30 s), then the intake's answer.
func (r *handsRun) overNATS(label, more string) {
	r.t.Helper()
	inbox := nats.NewInbox()
	s, err := r.sub.SubscribeSync(inbox)
	if err != nil {
		r.t.Fatal(err)
	}
	defer func() { _ = s.Unsubscribe() }()
	js, err := jetstream.New(r.sub)
	if err != nil {
		r.t.Fatal(err)
	}
	m := nats.NewMsg(queue.SubmitSubject + r.host)
	m.Header.Set("Authorization", "Bearer "+r.e.tokens["alice"])
	m.Header.Set("Orderly-Reply", inbox)
	m.Header.Set("Nats-Msg-Id", "hands-"+label+"-"+uuid.NewString())
	if m.Data, err = json.Marshal(r.script(label, more)); err != nil {
		r.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(testenv.Context(r.t), 2*time.Second)
		_, err := js.PublishMsg(ctx, m)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("NATS submission %s: %v", label, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	reply, err := s.NextMsg(30 * time.Second)
	if err != nil {
		r.t.Fatalf("NATS submission %s: no intake answer: %v", label, err)
	}
	var a api.IntakeAnswer
	if err := json.Unmarshal(reply.Data, &a); err != nil || a.Order == nil {
		r.t.Fatalf("NATS submission %s: answer %s (%v)", label, reply.Data, err)
	}
	r.accepted(label, a.Order.ID)
}

func (r *handsRun) accepted(label string, id uuid.UUID) {
	r.labels = append(r.labels, label)
	r.ids[label] = id
}

// ran is the labels of the log, in the order the orders ran.
func (r *handsRun) ran() []string {
	b, err := os.ReadFile(filepath.Join(r.dir, "log"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		r.t.Fatal(err)
	}
	return strings.Fields(string(b))
}

// settle waits up to d for every accepted order to end and returns
// their statuses by label.
func (r *handsRun) settle(d time.Duration) map[string]string {
	r.t.Helper()
	status := map[string]string{}
	deadline := time.Now().Add(d)
	for {
		open := 0
		for _, l := range r.labels {
			o := r.e.order(r.ids[l])
			status[l] = string(o.Status)
			if o.Status == "queued" || o.Status == "running" {
				open++
			}
		}
		if open == 0 {
			return status
		}
		if time.Now().After(deadline) {
			r.t.Errorf("%d accepted orders still open after %v: %v", open, d, status)
			return status
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkContract fails the test when an accepted order ran twice, ran
// out of submission order, or succeeded without running; it returns
// the statuses.
func (r *handsRun) checkContract(status map[string]string) {
	r.t.Helper()
	ran := r.ran()
	seen := map[string]bool{}
	last := -1
	for _, l := range ran {
		if seen[l] {
			r.t.Errorf("order %s ran twice (log %v)", l, ran)
		}
		seen[l] = true
		i := slices.Index(r.labels, l)
		if i < last {
			r.t.Errorf("order %s ran out of order (log %v, submitted %v)", l, ran, r.labels)
		}
		last = max(last, i)
	}
	for _, l := range r.labels {
		if status[l] == "succeeded" && !seen[l] {
			r.t.Errorf("order %s succeeded without running", l)
		}
	}
}

// TestOperatorChangesJetStreamByHand: what an operator's nats CLI does
// to orderly's JetStream objects while orders flow (deploy.md, "Changing
// JetStream state by hand"), each case done with the Go jetstream API as
// the CLI does it, while a long order runs with a backlog behind it
// submitted over REST and NATS: no accepted order runs twice, out of
// submission order, or succeeds without running; every one ends; the
// orders submitted after the change succeed, and so do all the others
// unless the change removed their messages (those end canceled). Before
// the API made its streams again by itself, a deleted ORDERLY_SUBMIT
// refused every NATS submission until a restart; before a standby told a
// lease deleted by hand from a release, it took the host and ended the
// running order interrupted.
func TestOperatorChangesJetStreamByHand(t *testing.T) {
	cases := []struct {
		name string
		act  func(t *testing.T, ctx context.Context, js jetstream.JetStream, host string)
	}{
		{"stream_rm_live", func(t *testing.T, ctx context.Context, js jetstream.JetStream, _ string) {
			orFail(t, js.DeleteStream(ctx, queue.LiveStream))
		}},
		{"stream_rm_orders", func(t *testing.T, ctx context.Context, js jetstream.JetStream, _ string) {
			orFail(t, js.DeleteStream(ctx, queue.OrdersStream))
		}},
		{"stream_purge_orders", func(t *testing.T, ctx context.Context, js jetstream.JetStream, _ string) {
			st, err := js.Stream(ctx, queue.OrdersStream)
			orFail(t, err)
			orFail(t, st.Purge(ctx))
		}},
		{"consumer_rm", func(t *testing.T, ctx context.Context, js jetstream.JetStream, host string) {
			orFail(t, js.DeleteConsumer(ctx, queue.OrdersStream, queue.ConsumerName(host)))
		}},
		{"consumer_rm_intake", func(t *testing.T, ctx context.Context, js jetstream.JetStream, _ string) {
			orFail(t, js.DeleteConsumer(ctx, queue.SubmitStream, queue.IntakeConsumerName))
		}},
		{"stream_edit_orders_max_age", func(t *testing.T, ctx context.Context, js jetstream.JetStream, _ string) {
			editStream(t, ctx, js, queue.OrdersStream, func(c *jetstream.StreamConfig) { c.MaxAge, c.Duplicates = 3*time.Second, time.Second })
		}},
		{"stream_edit_orders_max_bytes", func(t *testing.T, ctx context.Context, js jetstream.JetStream, _ string) {
			editStream(t, ctx, js, queue.OrdersStream, func(c *jetstream.StreamConfig) { c.MaxBytes = 300 })
		}},
		{"stream_rm_submit", func(t *testing.T, ctx context.Context, js jetstream.JetStream, _ string) {
			orFail(t, js.DeleteStream(ctx, queue.SubmitStream))
		}},
		{"stream_purge_submit", func(t *testing.T, ctx context.Context, js jetstream.JetStream, _ string) {
			st, err := js.Stream(ctx, queue.SubmitStream)
			orFail(t, err)
			orFail(t, st.Purge(ctx))
		}},
		{"kv_del_lease", func(t *testing.T, ctx context.Context, js jetstream.JetStream, host string) {
			kv, err := js.KeyValue(ctx, queue.HostsBucket)
			orFail(t, err)
			orFail(t, kv.Delete(ctx, "lease."+host))
		}},
		{"kv_del_lease_with_standby", func(t *testing.T, ctx context.Context, js jetstream.JetStream, host string) {
			kv, err := js.KeyValue(ctx, queue.HostsBucket)
			orFail(t, err)
			orFail(t, kv.Delete(ctx, "lease."+host))
		}},
		{"kv_rm_hosts", func(t *testing.T, ctx context.Context, js jetstream.JetStream, _ string) {
			orFail(t, js.DeleteKeyValue(ctx, queue.HostsBucket))
		}},
		{"kv_rm_marks", func(t *testing.T, ctx context.Context, js jetstream.JetStream, _ string) {
			orFail(t, js.DeleteKeyValue(ctx, queue.MarksBucket))
		}},
	}
	// In these a second worker of the host waits as its standby.
	standby := map[string]bool{"kv_del_lease_with_standby": true}
	// These remove queued orders' messages (what the operator asked
	// for, or a limit that acts until the API sets it back): those
	// orders end canceled. In every other case every order succeeds.
	lossy := map[string]bool{"stream_rm_orders": true, "stream_purge_orders": true,
		"stream_edit_orders_max_age": true, "stream_edit_orders_max_bytes": true}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newHandsRun(t)
			if standby[c.name] {
				startBoundWorker(t, r.e, r.e.natsURL, r.host)
			}
			gate := filepath.Join(r.dir, "gate")
			r.rest("L", "while [ ! -e "+gate+" ]; do sleep 0.05; done")
			testenv.WaitUntil(t, 30*time.Second, "the long order running", func() bool {
				return r.e.order(r.ids["L"]).Status == "running"
			})
			for i := range 3 {
				r.rest(fmt.Sprintf("B%dr", i), "")
				r.overNATS(fmt.Sprintf("B%dn", i), "")
			}
			acted := time.Now()
			c.act(t, testenv.Context(t), r.js, r.host)
			time.Sleep(1500 * time.Millisecond) // the change seen while the long order runs
			orFail(t, os.WriteFile(gate, nil, 0o644))
			for i := range 3 {
				r.rest(fmt.Sprintf("A%dr", i), "")
				r.overNATS(fmt.Sprintf("A%dn", i), "")
			}
			status := r.settle(60 * time.Second)
			t.Logf("%s: settled %v after the change; ran %v; statuses %v", c.name, time.Since(acted).Round(time.Millisecond), r.ran(), status)
			r.checkContract(status)
			for _, l := range r.labels {
				switch {
				case status[l] == "succeeded":
				case strings.HasPrefix(l, "A"):
					t.Errorf("order %s, submitted after the change, is %s", l, status[l])
				case !lossy[c.name] || status[l] != "canceled":
					t.Errorf("order %s is %s", l, status[l])
				}
			}
		})
	}
}

// orFail ends the test at err, a step of its own that failed.
func orFail(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// editStream changes a stream's settings as `nats stream edit` does.
func editStream(t *testing.T, ctx context.Context, js jetstream.JetStream, name string, change func(*jetstream.StreamConfig)) {
	t.Helper()
	st, err := js.Stream(ctx, name)
	orFail(t, err)
	cfg := st.CachedInfo().Config
	change(&cfg)
	_, err = js.UpdateStream(ctx, cfg)
	orFail(t, err)
}
