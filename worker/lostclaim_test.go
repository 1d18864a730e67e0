package worker_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestResultOfAClaimPostgreSQLLostIsRecorded: a failover of PostgreSQL
// to an asynchronous standby that had not received an order's claim (or
// a restore from a backup taken before it) leaves the order queued at
// its attempt before, while the worker runs it. The worker's result was
// refused ("result not recorded") and its message acknowledged: the
// order stayed queued until the lost-order search canceled it a minute
// later, its outcome unknown, though the worker had it. The worker now
// claims it again and records its result, written alone or with the
// next order's claim (pipelined). The test takes the claim back as the
// promoted standby would not have it: the row queued at attempt 0, its
// started event and process record gone. An order whose deadline to
// start passed while it ran (started in time) is recorded too: the
// claim made again to record a run is no start, and was refused as an
// expired order's, the result lost and the order, which ran, later
// ended as expired, never started.
func TestResultOfAClaimPostgreSQLLostIsRecorded(t *testing.T) {
	for _, tc := range []struct {
		name    string
		next    bool // a next order is delivered while the first runs
		expired bool // its deadline to start passed while it ran
	}{
		{"alone", false, false},
		{"pipelined", true, false},
		{"past its deadline", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store, pool := testenv.Store(t, testenv.Postgres(t))
			q := testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: 30 * time.Second, LeaseTTL: 2 * time.Second})
			e := &env{t: t, store: store, q: q}
			const host = "lostclaim"
			logs := &testenv.LogBuffer{}
			runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: 30 * time.Second,
				ShutdownGrace: 5 * time.Second}, store, q, testenv.LoggerTo(io.MultiWriter(logs, t.Output())))

			id := e.submit(host, "sh", "-c", "sleep 2; echo ran")
			e.waitStarted(id)
			var next uuid.UUID
			if tc.next {
				next = e.submit(host, "true")
			}
			ctx := t.Context()
			reset := []string{
				`UPDATE orders SET status = 'queued', attempt = 0, started_at = NULL, worker = '', stream_seq = NULL WHERE id = $1`,
				`DELETE FROM order_events WHERE order_id = $1 AND type = 'started'`,
				`DELETE FROM order_processes WHERE order_id = $1`,
			}
			if tc.expired {
				reset = append(reset, `UPDATE orders SET expires_at = now() WHERE id = $1`)
			}
			for _, q := range reset {
				if _, err := pool.Exec(ctx, q, id); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}

			o := e.waitStatus(id, order.StatusSucceeded)
			if o.Attempt != 1 || string(o.Result.Stdout.Content) != "ran\n" {
				t.Errorf("order recorded at attempt %d with stdout %q, want attempt 1 and its run's output", o.Attempt, o.Result.Stdout.Content)
			}
			if !strings.Contains(logs.String(), `msg="PostgreSQL lost this order's claim after it ran`) {
				t.Errorf("no ERROR line says PostgreSQL lost the order's claim")
			}
			if tc.next {
				e.waitStatus(next, order.StatusSucceeded)
			}
			// One run: the claim made again started nothing.
			runs := 0
			for line := range strings.Lines(logs.String()) {
				if strings.Contains(line, `msg="order started"`) && strings.Contains(line, "order_id="+id.String()) {
					runs++
				}
			}
			if runs != 1 {
				t.Errorf("the order started %d times, want 1", runs)
			}
		})
	}
}

// TestResultOfAnOrderPostgreSQLLostIsLogged: a failover to an
// asynchronous standby that had not received an order at all (accepted,
// claimed and started in its lag) leaves the worker running an order
// that has no row. Its result has nowhere to go; the worker's ERROR line
// is the only record of the run, with its outcome, where it said only
// "no longer running under this attempt", as for an order another
// worker had settled.
func TestResultOfAnOrderPostgreSQLLostIsLogged(t *testing.T) {
	store, pool := testenv.Store(t, testenv.Postgres(t))
	q := testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: 30 * time.Second, LeaseTTL: 2 * time.Second})
	e := &env{t: t, store: store, q: q}
	const host = "lostorder"
	logs := &testenv.LogBuffer{}
	runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: 30 * time.Second,
		ShutdownGrace: 5 * time.Second}, store, q, testenv.LoggerTo(io.MultiWriter(logs, t.Output())))

	id := e.submit(host, "sh", "-c", "sleep 2; exit 3")
	e.waitStarted(id)
	for _, q := range []string{`DELETE FROM order_events WHERE order_id = $1`, `DELETE FROM order_processes WHERE order_id = $1`,
		`DELETE FROM orders WHERE id = $1`} {
		if _, err := pool.Exec(t.Context(), q, id); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	want := `level=ERROR msg="result not recorded: the order this worker ran is not in the database`
	testenv.WaitUntil(t, 30*time.Second, "the worker says the order it ran is gone", func() bool {
		for line := range strings.Lines(logs.String()) {
			if strings.Contains(line, want) && strings.Contains(line, "order_id="+id.String()) &&
				strings.Contains(line, "status=failed") && strings.Contains(line, "exit_code=3") {
				return true
			}
		}
		return strings.Contains(logs.String(), `msg="result not recorded: the order is no longer running`)
	})
	if !strings.Contains(logs.String(), want) {
		t.Errorf("the worker did not say the order it ran is not in the database")
	}
}
