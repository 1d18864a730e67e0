package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestWorkerTakesItsHostFromAForgerFasterThanItsRoundTrip runs h1's
// workers as `orderly worker` processes with h1's seed, the second
// reaching NATS through a path that delays everything 40 ms each way,
// while h2's seed writes h1's lease key (the reply-subject route, as
// TestAnotherHostsSeedCannotTakeTheLease's forger) more often than that
// worker's round trip. Every write conditioned on the key's revision it
// read loses to the forger's next message.
//
//   - The standby's take: the first worker (the holder) is killed; its
//     standby is due a lease later and takes the host with a plain put
//     after three beaten takes (hA22), then runs h1's next order.
//   - The holder's take-back: that worker, now the holder, is frozen
//     (SIGSTOP) for two and a half leases and thawed, with no standby.
//     Its take-backs of the lapsed key were conditioned only: it stayed
//     in doubt, its claims paused, and h1 ran nothing for as long as the
//     forger wrote. It takes its key back with a plain put once three
//     were beaten and PostgreSQL still names it h1's owner, and runs
//     h1's next order.
//
// Checked from outside: each order succeeded on its first attempt, run
// by the worker PostgreSQL records (orders.worker) and by that worker's
// process (the marker line the order's shell writes names its parent),
// in submission order, and each worker logged its plain write.
func TestWorkerTakesItsHostFromAForgerFasterThanItsRoundTrip(t *testing.T) {
	ctx := t.Context()
	o := newOneAccountStack(t, "warn")
	s, creds, dsn, probe := o.stack, o.creds, o.dsn, o.probe(t)
	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close(context.Background()) })

	dir := t.TempDir()
	slow := testenv.SlowPath(t, strings.TrimPrefix(o.natsURL, "nats://"), 40*time.Millisecond)
	var procs []*faultProc
	worker := func(name, natsURL string) *faultProc {
		p := startFaultProc(t, name, filepath.Join(dir, name+".log"), []string{
			"ORDERLY_DATABASE_URL=" + dsn, "ORDERLY_NATS__URL=" + natsURL,
			"ORDERLY_NATS__LEASE_TTL=2s", "ORDERLY_NATS__HEARTBEAT=300ms", "ORDERLY_LOG__LEVEL=info", "PATH=/usr/bin:/bin",
		}, orderlyBin, "worker", "--host", "h1", "--nats-nkey", creds.Workers["h1"])
		t.Cleanup(func() {
			if b, err := os.ReadFile(p.log); err == nil && t.Failed() {
				t.Logf("%s's log:\n%s", name, b)
			}
		})
		procs = append(procs, p)
		return p
	}
	// handedBack counts the workers' lines saying they handed order id
	// back unstarted: each such claim counted an attempt that ran
	// nothing (the marker below says what ran, and how often).
	handedBack := func(id uuid.UUID) int {
		n := 0
		for _, p := range procs {
			b, _ := os.ReadFile(p.log)
			for _, line := range strings.Split(string(b), "\n") {
				if strings.Contains(line, "order handed back unstarted") && strings.Contains(line, id.String()) {
					n++
				}
			}
		}
		return n
	}
	// Each order appends its number and its shell's parent, the worker
	// process that runs it, to marker.
	marker := filepath.Join(runsMarker(t), "..", "order")
	submit := func(i int) uuid.UUID {
		t.Helper()
		code, body := s.do("POST", "/v1/orders", map[string]any{"host": "h1", "command": "sh",
			"args": []string{"-c", `echo "$2 $PPID" >> "$1"`, "_", marker, strconv.Itoa(i)}})
		if code != http.StatusAccepted {
			t.Fatalf("submit = %d, want 202: %s", code, body)
		}
		var o api.Order
		if err := json.Unmarshal(body, &o); err != nil {
			t.Fatal(err)
		}
		return o.ID
	}
	// ran waits up to d for order id to succeed and returns the worker
	// PostgreSQL records as having run it.
	ran := func(id uuid.UUID, d time.Duration, what string) (worker string, started time.Time) {
		t.Helper()
		got := s.waitFor(id, d, terminal)
		var status string
		var attempt int
		if err := db.QueryRow(ctx, `SELECT status, attempt, worker FROM orders WHERE id = $1`, id).Scan(&status, &attempt, &worker); err != nil {
			t.Fatal(err)
		}
		// A claim handed back unstarted (its start found the lease's
		// renewal late: the forger's writes put it in doubt) counts an
		// attempt; every other attempt would be a run or an interruption.
		if want := 1 + handedBack(id); status != "succeeded" || attempt != want {
			t.Fatalf("%s: order %s is %s on attempt %d in PostgreSQL (the API says %s), want succeeded on attempt %d", what, id, status, attempt, got.Status, want)
		}
		return worker, *got.StartedAt
	}

	// h1's holder, direct, runs order 0; its standby, on the slow path,
	// waits and learns that h1's lease is signed.
	a := worker("worker-a", o.natsURL)
	instA, _ := ran(submit(0), time.Minute, "the first worker's order")
	b := worker("worker-b", "nats://"+slow)
	var instB string
	testenv.WaitUntil(t, 30*time.Second, "h1's standby reported", func() bool {
		_, sb, err := probe.WorkersOf(ctx, "h1")
		instB = sb["h1"].Instance
		return err == nil && instB != "" && instB != instA
	})
	testenv.WaitUntil(t, 30*time.Second, "the standby saw the holder renew", func() bool {
		return b.logged("waiting as standby")
	})
	time.Sleep(2 * time.Second) // a lease of renewals, signed, seen by the standby

	stopForging := forgeH1Lease(t, o.h2(t), instA)
	defer stopForging()

	// The standby's take.
	a.signal(syscall.SIGKILL)
	if !a.waitExit(10 * time.Second) {
		t.Fatal("the first worker did not die")
	}
	if got, _ := ran(submit(1), time.Minute, "the order after the holder died"); got != instB {
		t.Fatalf("the order after the holder died ran on %q, want the standby %q", got, instB)
	}
	if !b.logged("this standby's conditioned takes") {
		t.Fatal("the standby took h1 without a plain write: the forger did not beat its takes, and the put path was not run")
	}

	// The holder's take-back: frozen two and a half leases, thawed. The
	// order is submitted once the thawed holder has found its lease
	// lapsed (a take-back refused), its claims paused: one claimed before
	// that, on the fence alone, says nothing of the take-back.
	stopProcess(t, b.pid())
	time.Sleep(5 * time.Second)
	off := b.logSize()
	b.signal(syscall.SIGCONT)
	thawed := time.Now()
	testenv.WaitUntil(t, 30*time.Second, "the thawed holder found its lease lapsed", func() bool {
		return b.loggedSince(off, "renew lease") || b.loggedSince(off, "had lapsed")
	})
	got, started := ran(submit(2), 30*time.Second, "the order after the holder's thaw")
	if got != instB {
		t.Fatalf("the order after the thaw ran on %q, want the thawed holder %q", got, instB)
	}
	t.Logf("h1 ran its order %s after its holder's thaw", started.Sub(thawed).Round(time.Millisecond))
	if !b.loggedSince(off, "this holder's conditioned take-backs of its lapsed lease") {
		t.Fatal("the thawed holder took h1 back without a plain write: the forger did not beat its take-backs, and the put path was not run")
	}
	stopForging()

	raw, err := os.ReadFile(marker)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("0 %d\n1 %d\n2 %d\n", a.pid(), b.pid(), b.pid())
	if string(raw) != want {
		t.Fatalf("h1's orders ran as (number, worker pid)\n%s\nwant\n%s", raw, want)
	}
}

// forgeH1Lease has h2's connection, on h2's seed, store, in turns, what
// TestAnotherHostsSeedCannotTakeTheLease's forger does on h1's lease key
// (an unsigned value, a value with a signature of another key, a delete
// naming holder as its releaser, an expiry marker) through the
// reply-subject route, one every few milliseconds, until the returned
// stop; the test fails if none reached the key.
func forgeH1Lease(t *testing.T, h2 *nats.Conn, holder string) (stop func()) {
	t.Helper()
	forgeries := []struct {
		body string
		hdr  nats.Header
	}{
		{"forger", nil},
		{"forger\n" + strings.Repeat("0", 64), nil},
		{"", nats.Header{"KV-Operation": {"DEL"}, queue.ReleasedHeader: {holder}, queue.ReleaseSignatureHeader: {strings.Repeat("0", 64)}}},
		{"", nats.Header{"KV-Operation": {"PURGE"}}},
	}
	var (
		wg      sync.WaitGroup
		done    = make(chan struct{})
		written atomic.Int64
		ferr    atomic.Value
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			f := forgeries[i%len(forgeries)]
			if err := forgeByReply(h2, f.body, f.hdr, "lease.h1"); err != nil {
				ferr.Store(err)
				return
			}
			written.Add(1)
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
			if err, _ := ferr.Load().(error); err != nil {
				t.Error(err)
			}
			t.Logf("forgeries sent to h1's lease key: %d", written.Load())
		})
	}
}
