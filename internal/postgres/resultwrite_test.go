package postgres_test

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// keptOutput is an output as a capture records it: content kept of a
// stream of n bytes whose hash is that of the whole stream.
func keptOutput(content []byte, n int64, truncated bool) order.Output {
	sum := sha256.Sum256(content)
	return order.Output{Content: content, Bytes: n, Truncated: truncated, SHA256: sum[:]}
}

// randomBytes returns n pseudo-random bytes: most of it is not valid UTF-8,
// and it holds every byte value, NUL included.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestLargeOutputsAreStreamedByteForByte: a result whose output reaches
// StageOutputsFrom is streamed into the row (COPY into a staging table)
// and reads back exactly as the single statement writes it: the same
// contents byte for byte, bytes, truncated and sha256, whichever streams
// are large, small, or kept but empty; through Complete and through
// CompleteAndClaim, which still claims the next order in the same write.
func TestLargeOutputsAreStreamedByteForByte(t *testing.T) {
	big := randomBytes(1, 5<<20+3)
	binaryish := append(bytes.Repeat([]byte("line €\n"), 200000), 0xff, 0xfe, 0, 0xc3) // ends inside a rune
	cases := []struct {
		name           string
		stdout, stderr order.Output
	}{
		{"large stdout, empty stderr kept", keptOutput(big, int64(len(big)), false), keptOutput([]byte{}, 0, false)},
		{"large stderr, no stdout", order.Output{}, keptOutput(binaryish, int64(len(binaryish)), false)},
		{"large stdout truncated, small stderr", keptOutput(big[:4<<20], 9<<30, true), keptOutput([]byte("warn\xff\n"), 6, false)},
		{"both large, stderr exactly at the threshold", keptOutput(binaryish, int64(len(binaryish)), false),
			keptOutput(big[:postgres.StageOutputsFrom], postgres.StageOutputsFrom, false)},
	}
	e := newStoreEnv(t)
	e.own("h", "w1")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			finish := succeeded("")
			finish.Result.Stdout, finish.Result.Stderr = c.stdout, c.stderr
			// The same result three ways: the single statement, and
			// streamed by Complete and by CompleteAndClaim.
			unstaged := e.insert("h", "p", nil)
			if err := e.store.CompleteUnstaged(e.ctx, unstaged.ID, e.claim(unstaged.ID, "w1").Attempt, finish); err != nil {
				t.Fatal(err)
			}
			staged := e.insert("h", "p", nil)
			if err := e.store.Complete(e.ctx, staged.ID, e.claim(staged.ID, "w1").Attempt, finish); err != nil {
				t.Fatal(err)
			}
			pipelined, next := e.insert("h", "p", nil), e.insert("h", "p", nil)
			step, err := e.store.CompleteAndClaim(e.ctx, pipelined.ID, e.claim(pipelined.ID, "w1").Attempt, finish, next.ID, "w1", 2)
			if err != nil || step.Done != nil || !step.Claimed || step.Next.ID != next.ID || step.Next.Status != order.StatusRunning {
				t.Fatalf("CompleteAndClaim: %+v, %v", step, err)
			}
			want := e.get(unstaged.ID).Result
			for name, out := range map[string]order.Output{"stdout": want.Stdout, "stderr": want.Stderr} {
				in := map[string]order.Output{"stdout": c.stdout, "stderr": c.stderr}[name]
				if !bytes.Equal(out.Content, in.Content) || (out.Content == nil) != (in.Content == nil) ||
					out.Bytes != in.Bytes || out.Truncated != in.Truncated || !bytes.Equal(out.SHA256, in.SHA256) {
					t.Fatalf("%s through the single statement: %d bytes kept (nil %v), %d/%v/%x; want %d (nil %v), %d/%v/%x", name,
						len(out.Content), out.Content == nil, out.Bytes, out.Truncated, out.SHA256,
						len(in.Content), in.Content == nil, in.Bytes, in.Truncated, in.SHA256)
				}
			}
			for _, id := range []*order.Order{staged, pipelined} {
				got := e.get(id.ID)
				if !reflect.DeepEqual(got.Result, want) {
					t.Fatalf("streamed result differs from the single statement's: stdout %d bytes, stderr %d; want %d, %d",
						len(got.Result.Stdout.Content), len(got.Result.Stderr.Content), len(want.Stdout.Content), len(want.Stderr.Content))
				}
				if got.Status != order.StatusSucceeded || e.eventTypes(id.ID)[len(e.eventTypes(id.ID))-1] != "finished" {
					t.Fatalf("status %s, events %v", got.Status, e.eventTypes(id.ID))
				}
			}
		})
	}
}

// TestStreamedResultIsGuardedByAttempt: the attempt guard refuses a stale
// attempt's large result as it does a small one (a conflict, no row
// written, no event), through Complete and CompleteAndClaim (whose claim
// still happens), and the refused write leaves nothing staged on the
// connection. The store has one connection, so every write shares it.
func TestStreamedResultIsGuardedByAttempt(t *testing.T) {
	ctx := testenv.Context(t)
	store, pool := testenv.Store(t, testenv.Postgres(t)+"&pool_max_conns=1")
	e := &storeEnv{t: t, ctx: ctx, pool: pool, store: store}
	e.own("h", "w1")
	finish := succeeded("")
	big := randomBytes(2, 3<<20)
	finish.Result.Stdout = keptOutput(big, int64(len(big)), false)

	// staleAttempt claims an order twice (queued again in between, as an
	// idempotent order is) and returns its first, stale, attempt.
	staleAttempt := func(o *order.Order) int {
		first := e.claim(o.ID, "w1")
		e.exec(`UPDATE orders SET status = 'queued' WHERE id = $1`, o.ID)
		if again := e.claim(o.ID, "w1"); again.Attempt != first.Attempt+1 {
			t.Fatalf("second claim is attempt %d", again.Attempt)
		}
		return first.Attempt
	}
	refused := func(o *order.Order, err error) {
		t.Helper()
		if order.ErrorCode(err) != order.CodeConflict {
			t.Fatalf("stale large result: %v, want a conflict", err)
		}
		got := e.get(o.ID)
		if got.Status != order.StatusRunning || got.Result != nil || slices.Contains(e.eventTypes(o.ID), "finished") {
			t.Fatalf("the refused result was written: status %s, result %+v, events %v", got.Status, got.Result, e.eventTypes(o.ID))
		}
		var left int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_temp.orderly_staged_outputs`).Scan(&left); err != nil || left != 0 {
			t.Fatalf("staged rows left on the connection: %d, %v", left, err)
		}
	}

	o := e.insert("h", "p", nil)
	refused(o, e.store.Complete(ctx, o.ID, staleAttempt(o), finish))

	o, next := e.insert("h", "p", nil), e.insert("h", "p", nil)
	step, err := e.store.CompleteAndClaim(ctx, o.ID, staleAttempt(o), finish, next.ID, "w1", 3)
	if err != nil || !step.Claimed || step.Next.ID != next.ID {
		t.Fatalf("CompleteAndClaim: %+v, %v", step, err)
	}
	refused(o, step.Done)

	// The running attempt's result is still written whole afterwards.
	if err := e.store.Complete(ctx, o.ID, o.Attempt+2, finish); err != nil {
		t.Fatal(err)
	}
	if got := e.get(o.ID).Result; got == nil || !bytes.Equal(got.Stdout.Content, big) {
		t.Fatal("the running attempt's large result was not written")
	}
}

// TestSpilledOutputsAreStreamedFromTheirFile: an output whose content is
// in a file (Finish.Spilled: a worker's capture past 1 MiB, its Content
// nil) is written into the row from there, byte for byte, through
// Complete and CompleteAndClaim, next to an output held in memory; and a
// write refused and tried again reads the file from its start again.
func TestSpilledOutputsAreStreamedFromTheirFile(t *testing.T) {
	e := newStoreEnv(t)
	e.own("h", "w1")
	big := randomBytes(3, 3<<20+5)
	small := []byte("warn\n")
	finish := succeeded("")
	spilled := keptOutput(big, int64(len(big)), false)
	finish.Result.Stdout = order.Output{Bytes: spilled.Bytes, SHA256: spilled.SHA256}
	finish.Result.Stderr = keptOutput(small, int64(len(small)), false)
	finish.Spilled[0] = bytes.NewReader(big) // an io.ReaderAt with Size, as executor.Spill

	check := func(id *order.Order) {
		t.Helper()
		got := e.get(id.ID)
		if got.Status != order.StatusSucceeded || got.Result == nil {
			t.Fatalf("status %s, result %+v", got.Status, got.Result)
		}
		if out := got.Result.Stdout; !bytes.Equal(out.Content, big) || out.Bytes != int64(len(big)) || !bytes.Equal(out.SHA256, spilled.SHA256) {
			t.Fatalf("stdout: %d bytes kept of %d, want the spilled %d", len(out.Content), out.Bytes, len(big))
		}
		if !bytes.Equal(got.Result.Stderr.Content, small) {
			t.Fatalf("stderr: %q, want %q", got.Result.Stderr.Content, small)
		}
	}
	o := e.insert("h", "p", nil)
	first := e.claim(o.ID, "w1")
	if err := e.store.Complete(e.ctx, o.ID, first.Attempt+1, finish); order.ErrorCode(err) != order.CodeConflict {
		t.Fatalf("a result of an attempt not running: %v, want a conflict", err)
	}
	if err := e.store.Complete(e.ctx, o.ID, first.Attempt, finish); err != nil {
		t.Fatal(err)
	}
	check(o)
	pipelined, next := e.insert("h", "p", nil), e.insert("h", "p", nil)
	step, err := e.store.CompleteAndClaim(e.ctx, pipelined.ID, e.claim(pipelined.ID, "w1").Attempt, finish, next.ID, "w1", 3)
	if err != nil || step.Done != nil || !step.Claimed || step.Next.ID != next.ID {
		t.Fatalf("CompleteAndClaim: %+v, %v", step, err)
	}
	check(pipelined)
}
