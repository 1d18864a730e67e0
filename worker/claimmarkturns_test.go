package worker_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestClaimMarkOfTwoInstancesTakingTurns: two workers of one host take
// turns on the same message. Worker a claims an idempotent order
// (attempt 1) and dies with it claimed; worker b takes the host over,
// the takeover hands the order back, and b claims it again (attempt 2)
// and runs it. a's write of its claim mark (attempt 1) reaches NATS
// before b's (attempt 2), or after it: held on its way by a proxy until
// b's is written, as a write of a worker frozen past its lease would
// land. Either way NATS ends with b's mark, attempt 2: the older
// attempt's write never replaces the newer one's (a compare-and-set on
// the mark's revision, taken only when the mark moves past NATS's), and
// the newer one is not missed. What a restore would then do with the
// mark: a database from before b's claim (the order queued at attempt
// 1) has it canceled, not run twice; one from after b handed it back
// (queued at attempt 2) has it run, not refused.
func TestClaimMarkOfTwoInstancesTakingTurns(t *testing.T) {
	for _, tc := range []struct {
		name string
		late bool // a's write lands after b's
	}{
		{"older_write_first", false},
		{"older_write_late", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			e := newEnv(t)
			host := "turns-" + strings.ReplaceAll(tc.name, "_", "-")
			ran := filepath.Join(t.TempDir(), "ran")
			markSubject := "$KV." + queue.MarksBucket + ".claimed." + host
			markIs := func(what string, want func(queue.ClaimMark) bool) queue.ClaimMark {
				t.Helper()
				var m queue.ClaimMark
				testenv.WaitUntil(t, 30*time.Second, what, func() bool {
					var err error
					m, err = e.q.ClaimMarkOf(context.WithoutCancel(ctx), host, nil)
					return err == nil && want(m)
				})
				return m
			}

			proxy := newPubHoldProxy(t, e.q.Conn().ConnectedUrl())
			ncA, err := queue.Connect("nats://"+proxy.addr(), "worker a")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(ncA.Close)
			qa, err := queue.Bind(ctx, ncA, queue.Options{AckWait: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			x := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: host, Command: "sh",
				Args: []string{"-c", `echo x >> "$1"`, "_", ran}, Idempotent: true,
				Timeout: 20 * time.Second, Principal: "test", Source: "rest", CaptureStdout: true, CaptureStderr: true}
			if _, err := e.store.InsertOrder(ctx, x); err != nil {
				t.Fatal(err)
			}

			// a's tenure: a first order, its claim mark written.
			opts := worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second, ShutdownGrace: 5 * time.Second}
			optsA := opts
			optsA.Instance = host + "/a"
			optsA.FailPoint = func(p string, o *order.Order) error {
				if p == "after_claim" && o.ID == x.ID {
					return errCrash
				}
				return nil
			}
			_, doneA := runWorker(t, optsA, e.store, qa, testenv.Logger(t))
			first := e.waitStatus(e.submit(host, "true"), order.StatusSucceeded)
			markIs("a's first claim in NATS", func(m queue.ClaimMark) bool { return m.Seq == first.StreamSeq && m.Attempt == 1 })

			// a claims the order and dies; its writes of the mark are kept.
			proxy.keepAll(markSubject)
			if err := testenv.Answered(t, "the order's publish", func(ctx context.Context) error {
				_, err := e.q.Publish(ctx, host, x.ID)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if err := <-doneA; !errors.Is(err, errCrash) {
				t.Fatalf("worker a stopped with %v, want the injected crash", err)
			}
			claimedByA, err := e.store.GetOrder(ctx, x.ID)
			if err != nil || claimedByA.Attempt != 1 || claimedByA.StreamSeq == 0 {
				t.Fatalf("the order as a left it: %+v %v, want claimed at attempt 1", claimedByA, err)
			}
			if proxy.keptFor(markSubject) == 0 {
				t.Fatal("worker a never wrote its claim of the order")
			}
			seq := claimedByA.StreamSeq
			t.Logf("a's writes of its claim kept: %d", proxy.keptFor(markSubject))
			sendA := func() {
				proxy.sendKept(markSubject)
				if err := ncA.FlushTimeout(10 * time.Second); err != nil { // the server has taken them
					t.Fatal(err)
				}
			}
			if !tc.late {
				sendA()
				markIs("a's claim of the order in NATS", func(m queue.ClaimMark) bool { return m.Seq == seq && m.Attempt == 1 })
			}

			// b takes the host over and runs the order, in attempt 2.
			optsB := opts
			optsB.Instance = host + "/b"
			runWorker(t, optsB, e.store, e.q, testenv.Logger(t))
			if o := e.waitStatus(x.ID, order.StatusSucceeded); o.Attempt != 2 || o.StreamSeq != seq {
				t.Fatalf("the order under b: attempt %d, message %d; want attempt 2, message %d", o.Attempt, o.StreamSeq, seq)
			}
			markIs("b's claim in NATS", func(m queue.ClaimMark) bool { return m.Seq == seq && m.Attempt == 2 })
			if tc.late {
				sendA()
			}
			m, err := e.q.ClaimMarkOf(ctx, host, nil)
			if err != nil {
				t.Fatal(err)
			}
			if m.Seq != seq || m.Attempt != 2 {
				t.Fatalf("the claim mark after both writes: %+v, want message %d, attempt 2 (b's)", m, seq)
			}
			if !m.Passed(seq, m.Stored, 1) || m.Passed(seq, m.Stored, 2) {
				t.Errorf("the mark %+v: an order restored queued at attempt 1 passed: %v (want true), at attempt 2: %v (want false)",
					m, m.Passed(seq, m.Stored, 1), m.Passed(seq, m.Stored, 2))
			}
			if b, err := os.ReadFile(ran); err != nil || string(b) != "x\n" {
				t.Errorf("the order's runs: %q (%v), want one", b, err)
			}
		})
	}
}
