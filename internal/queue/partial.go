package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/order"
)

// Partial is the live output of an order that reached ORDERLY_LIVE: what
// an interrupted order keeps of the output its dead worker streamed.
type Partial struct {
	Stdout, Stderr                   []byte
	StdoutTruncated, StderrTruncated bool
}

// PartialOutput collects the live output chunks of order id, up to max
// bytes per stream. The live stream is kept in memory for an hour (and
// 256 MiB), and a NATS restart loses it, so it may have less than was
// produced, never more: the chunks are placed by their offsets, and the
// bytes before one that the stream no longer holds are the stored copy's
// truncation marker (order.TruncationMarker, counting them), the stream
// then truncated. Without the offsets, the chunks after such a hole
// were given, and stored, as the output from its start.
//
// Only the newest run's chunks count, and of it the newest round's
// (their Nats-Msg-Id: LiveOutput's msg): the stream takes no rollups, so
// an idempotent order run again keeps its lost run's chunks before the
// new run's, from offset 0 again, and a run's chunks published again
// after a NATS restart (a new round, from offset 0) follow those the
// stream took before, some perhaps after their later ones (flushed from
// the reconnect buffer into a stream made again). A chunk of a newer run
// or round starts the output again; one of an older round, come late, is
// skipped, and so is one of a run seen before the newest (LiveRuns).
// Rollups used to purge both before the new ones came.
//
// attempt, when not 0, is the attempt whose output is wanted: a run whose
// chunks name another attempt (LiveOutput.Attempt) is skipped. The
// newest run alone was not enough: an idempotent order's second
// attempt lost before it published a chunk kept the first attempt's
// output, which its successor had requeued, as its own. A run that
// names none (a worker of an earlier version) counts as before.
//
// The read is whole or an error: every chunk the consumer was sent
// arrived, and none the stream held at its creation was left unsent
// (ErrShortRead otherwise). Chunks the stream no longer holds are what
// the first paragraph says.
func (q *Queue) PartialOutput(ctx context.Context, host string, id uuid.UUID, max int64, attempt int) (Partial, error) {
	var p Partial
	var next [2]int64 // where in each stream the chunks given so far end
	var run string    // the run and round of the chunks given so far
	round := -1
	var runs LiveRuns // tells an earlier run's chunks
	// A consumer of its own, not an ordered one: an ordered consumer
	// makes its consumer again at every Fetch and retries that, with no
	// context, until the server answers, so a read begun just before
	// NATS went away hung until it came back, and with it a successor's
	// mark and its reap of a dead worker's processes (worker/takeover.go,
	// mark). Here every step ends: the creation and Info with ctx (or
	// nats.go's default timeout), a Fetch at its wait plus nats.go's
	// second. The chunks' offsets, not the delivery sequence, tell a
	// chunk missed (a truncation marker, below), as before.
	c, err := q.js.CreateConsumer(ctx, LiveStream, jetstream.ConsumerConfig{
		FilterSubject:     OutputSubjectOf(host, id),
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute,
		Replicas:          1,
		MemoryStorage:     true,
	})
	if err != nil {
		return p, fmt.Errorf("read live output of order %s: %w", id, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return p, fmt.Errorf("read live output of order %s: %w", id, err)
	}
	left := info.NumPending
	var got uint64 // chunks received
	for left > 0 {
		if err := ctx.Err(); err != nil {
			return p, fmt.Errorf("read live output of order %s: %w", id, err)
		}
		batch, err := c.Fetch(int(min(left, 256)), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return p, fmt.Errorf("read live output of order %s: %w", id, err)
		}
		n := uint64(0)
		for m := range batch.Messages() {
			n++
			var out *[]byte
			var truncated *bool
			i := 0
			switch m.Headers().Get(StreamHeader) {
			case "stdout":
				out, truncated = &p.Stdout, &p.StdoutTruncated
			case "stderr":
				out, truncated, i = &p.Stderr, &p.StderrTruncated, 1
			default:
				continue
			}
			msgID := m.Headers().Get(nats.MsgIdHdr)
			r, n, ok := chunkRun(msgID)
			if a, named := runAttempt(r); ok && named && attempt != 0 && a != attempt {
				continue
			}
			if runs.Earlier(msgID) {
				continue
			}
			if ok {
				switch {
				case r == run && n < round:
					continue
				case r != run, n > round:
					p, next, run, round = Partial{}, [2]int64{}, r, n
				}
			}
			data := m.Data()
			if off, err := strconv.ParseInt(m.Headers().Get(OffsetHeader), 10, 64); err == nil && off >= 0 {
				rest, gap := order.Continuing(off, next[i], data)
				if gap {
					*out, _ = appendCapped(*out, []byte(order.TruncationMarker(off-next[i])), max, *truncated)
					*truncated, next[i], rest = true, off, data
				}
				data = rest
				next[i] += int64(len(data))
			}
			*out, *truncated = appendCapped(*out, data, max, *truncated)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return p, fmt.Errorf("read live output of order %s: %w", id, err)
		}
		if n == 0 {
			break // nats.go ends a Fetch that waited in vain without an error
		}
		got += n
		left -= min(n, left)
	}
	// Whole, or an error. A Fetch that waited in vain, or got less than
	// it asked for, ends without an error: nothing left (dropped by
	// MaxAge or FreeLive since the Info), the server gone, or a server
	// slow past the Fetch's wait, whose messages then reach nobody (each
	// Fetch has its own inbox, and a consumer that takes no acks never
	// sends them again). Only the server tells them apart: taken for
	// whole, a slow server's short read was stored by the mark for good
	// (postgres.InterruptAttempt; RecordEvidence stores only where the
	// order holds none). Short, it is an error: the mark stores none,
	// and the evidence after the reap reads again (worker/takeover.go).
	end, err := c.Info(ctx)
	if err != nil {
		return p, fmt.Errorf("read live output of order %s: %w", id, err)
	}
	if lost := end.Delivered.Consumer - min(got, end.Delivered.Consumer); lost > 0 {
		return p, fmt.Errorf("read live output of order %s: %w: %d of the %d chunks sent never came", id, ErrShortRead, lost, end.Delivered.Consumer)
	}
	if left > 0 && end.NumPending > 0 {
		return p, fmt.Errorf("read live output of order %s: %w: %d chunks not sent within the wait", id, ErrShortRead, end.NumPending)
	}
	// Its InactiveThreshold removes it too.
	_ = q.js.DeleteConsumer(ctx, LiveStream, info.Name)
	return p, nil
}

// ErrShortRead is PartialOutput's error for a read the server did not
// finish within its wait, though it answered: some of the order's chunks
// it holds never reached the reader.
var ErrShortRead = errors.New("the live stream's server was too slow: the read is not whole")

// liveRun is a new run's id for attempt (0: not said): "a<attempt>-"
// and a NUID, which runAttempt reads back; the NUID alone for 0.
func liveRun(attempt int) string {
	run := nats.NewInbox()[len(nats.InboxPrefix):]
	if attempt <= 0 {
		return run
	}
	return "a" + strconv.Itoa(attempt) + "-" + run
}

// runAttempt is the attempt a run's id names (liveRun), if it names one.
func runAttempt(run string) (attempt int, ok bool) {
	rest, ok := strings.CutPrefix(run, "a")
	if !ok {
		return 0, false
	}
	a, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(a)
	return n, err == nil && n > 0
}

// chunkRun is the run and round of a chunk's Nats-Msg-Id (LiveOutput's
// msg: run.stream.offset.round).
func chunkRun(msgID string) (run string, round int, ok bool) {
	run, rest, ok := strings.Cut(msgID, ".")
	if !ok || run == "" {
		return "", 0, false
	}
	i := strings.LastIndexByte(rest, '.')
	if i < 0 {
		return "", 0, false
	}
	round, err := strconv.Atoi(rest[i+1:])
	if err != nil {
		return "", 0, false
	}
	return run, round, true
}

func appendCapped(dst, p []byte, max int64, truncated bool) ([]byte, bool) {
	room := max - int64(len(dst))
	if room <= 0 {
		return dst, truncated || len(p) > 0
	}
	if int64(len(p)) > room {
		return append(dst, p[:room]...), true
	}
	return append(dst, p...), truncated
}
