package queue_test

import (
	"strconv"
	"testing"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestPartialOutputReadsTheNewestRun: the live stream takes no rollups,
// so nothing drops a lost run's chunks before an idempotent order runs
// again under its id (from offset 0 again), nor the chunks a run
// published before its output was published again after a NATS restart
// (a new round, from offset 0 again; one of the old round may even come
// after, flushed from the reconnect buffer). PartialOutput, what a
// second loss stores as the order's output, reads the newest run's
// newest round alone; before, the lost run's bytes stood for the new
// run's at the same offsets.
func TestPartialOutputReadsTheNewestRun(t *testing.T) {
	q, _ := openQueue(t, queue.Options{})
	ctx := testenv.Context(t)
	id := uuid.New()
	publish := func(run string, round, offset int, stream, p string) {
		t.Helper()
		m := nats.NewMsg(queue.OutputSubjectOf("h1", id))
		m.Header.Set(queue.StreamHeader, stream)
		m.Header.Set(queue.OffsetHeader, itoa(offset))
		m.Header.Set(nats.MsgIdHdr, run+"."+stream+"."+itoa(offset)+"."+itoa(round))
		m.Data = []byte(p)
		if _, err := q.JetStream().PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// The lost run: more output than the next run reaches.
	publish("LOSTRUN", 0, 0, "stdout", "lost run line 1\n")
	publish("LOSTRUN", 0, 16, "stdout", "lost run line 2\n")
	publish("LOSTRUN", 0, 0, "stderr", "lost run error\n")
	// The next run, whose output was published again once (round 1).
	publish("NEXTRUN", 0, 0, "stdout", "next 1\n")
	publish("NEXTRUN", 0, 7, "stdout", "next 2\n")
	publish("NEXTRUN", 1, 0, "stdout", "next 1\n")
	publish("NEXTRUN", 0, 14, "stdout", "next 3\n") // round 0, flushed late: published again below
	publish("NEXTRUN", 1, 7, "stdout", "next 2\n")
	publish("NEXTRUN", 1, 14, "stdout", "next 3\n")
	publish("NEXTRUN", 1, 0, "stderr", "next error\n")
	publish("NEXTRUN", 1, 21, "stdout", "next 4\n")

	p, err := q.PartialOutput(ctx, "h1", id, 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	if string(p.Stdout) != "next 1\nnext 2\nnext 3\nnext 4\n" || string(p.Stderr) != "next error\n" || p.StdoutTruncated || p.StderrTruncated {
		t.Fatalf("partial output: stdout %q (truncated %v), stderr %q (truncated %v); want the next run's alone",
			p.Stdout, p.StdoutTruncated, p.Stderr, p.StderrTruncated)
	}
}

// TestPartialOutputSkipsALateChunkOfAnEarlierRun: a worker frozen with
// its order (a paused VM) loses its host; the order, idempotent, is
// queued again and runs on the standby's machine; the frozen worker
// thaws and its reconnect buffer brings the chunks its order printed
// meanwhile, after the next run's. The run in a chunk's Nats-Msg-Id is
// a random token, and any other run than the one read last started the
// output again: a second loss stored those stray chunks of the first
// run as the second's partial output. A run already seen before the
// newest one is an earlier one, and its late chunks are skipped.
func TestPartialOutputSkipsALateChunkOfAnEarlierRun(t *testing.T) {
	q, _ := openQueue(t, queue.Options{})
	ctx := testenv.Context(t)
	id := uuid.New()
	publish := func(run string, offset int, p string) {
		t.Helper()
		m := nats.NewMsg(queue.OutputSubjectOf("h1", id))
		m.Header.Set(queue.StreamHeader, "stdout")
		m.Header.Set(queue.OffsetHeader, itoa(offset))
		m.Header.Set(nats.MsgIdHdr, run+".stdout."+itoa(offset)+".0")
		m.Data = []byte(p)
		if _, err := q.JetStream().PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	publish("FIRSTRUN", 0, "first 1\n")
	publish("NEXTRUN", 0, "next 1\n")
	publish("NEXTRUN", 7, "next 2\n")
	publish("FIRSTRUN", 8, "first 2\n") // from the thawed worker's reconnect buffer
	publish("NEXTRUN", 14, "next 3\n")

	p, err := q.PartialOutput(ctx, "h1", id, 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	if string(p.Stdout) != "next 1\nnext 2\nnext 3\n" || p.StdoutTruncated {
		t.Fatalf("partial output: stdout %q (truncated %v); want the next run's alone", p.Stdout, p.StdoutTruncated)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestPartialOutputIsTheLostAttemptsOwn: an idempotent order's first
// attempt printed, its worker died, its successor requeued it; the
// second attempt's worker died before that attempt published a chunk.
// The chunks in the live stream are the first attempt's alone, and the
// newest run was theirs: the second attempt's successor stored the
// first attempt's output as the interrupted order's, which that attempt
// never printed. The chunks of a run name its attempt (LiveOutput's
// Attempt), and PartialOutput keeps the attempt's it is asked for.
func TestPartialOutputIsTheLostAttemptsOwn(t *testing.T) {
	q, _ := openQueue(t, queue.Options{})
	ctx := testenv.Context(t)
	id := uuid.New()
	first := queue.LiveOutput{Attempt: 1}
	held := &heldStreams{}
	line := []byte("the first attempt's line\n")
	held.write("stdout", line)
	if err := first.Publish(q, held, "h1", id, "stdout", 0, line); err != nil {
		t.Fatal(err)
	}
	first.Stop()

	p, err := q.PartialOutput(ctx, "h1", id, 1<<20, 1)
	if err != nil {
		t.Fatal(err)
	}
	if string(p.Stdout) != string(line) {
		t.Fatalf("the first attempt's output read %q, want %q", p.Stdout, line)
	}
	p, err = q.PartialOutput(ctx, "h1", id, 1<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Stdout) != 0 || len(p.Stderr) != 0 {
		t.Fatalf("the second attempt, which published nothing, read stdout %q, stderr %q: the first attempt's", p.Stdout, p.Stderr)
	}
}
