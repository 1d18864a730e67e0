package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
)

// Tuning of Follow. The idle limit only forces a reconnect (which resumes
// with Last-Event-ID), so it may be short of a quiet command's silence
// without losing anything.
const (
	sseMaxEvent       = 32 << 20
	sseIdleTimeout    = 90 * time.Second
	sseMaxFailures    = 8 // consecutive reconnects without an event, then poll
	pollMaxDelay      = time.Second
	apiOutageTolerate = 30 * time.Second
)

// FollowOptions say where Follow writes an order's output and whom it
// tells what it sees. Every field may be left zero.
type FollowOptions struct {
	// Stdout and Stderr receive the order's output as raw bytes while it
	// runs; nil discards it.
	Stdout, Stderr io.Writer
	// OnStatus is told StatusQueued and StatusRunning as they are seen.
	OnStatus func(Status)
	// BeforeOutput runs once, before the first output byte is written.
	BeforeOutput func()
	// OnMissed is told when output of stream ("stdout" or "stderr") was
	// lost on the way and the stored copy is truncated, so the missed
	// bytes cannot be written.
	OnMissed func(stream string, missed int64)
	// OnInterrupted is told when the live output of stream lost chunks
	// on the way (the message bus restarted and lost its memory stream)
	// after written bytes of it were written: as a chunk whose offset is
	// past them shows, while the order runs (once per hole), or, at the
	// order's end after the API's "interrupted" event, when the stored
	// copy holds more than was written live (then it writes the rest).
	// The "interrupted" event alone tells nothing: a worker publishes a
	// running order's chunks again from offset 0 once the stream is back,
	// and Follow goes on placing them by offset (repeats dropped), so a
	// hole it was told of while the order runs may still fill. A long
	// order's follower would otherwise look frozen until its end.
	OnInterrupted func(stream string, written int64)
	// OnLiveShort is told at the order's end, after the API's
	// "interrupted" event, for a stream whose stored copy holds more than
	// was written live and of which no hole was told while the order ran
	// (the rest is then written from the stored copy). why says which:
	// LiveCapped when the live output reached the order's output cap
	// (worker.max_output_bytes, for stdout and stderr together: the
	// worker marks the chunk that reaches it) and none of it is missing,
	// so the message bus lost nothing that would have come live;
	// LiveLost otherwise (a worker that does not publish a running
	// order's chunks again, an order that ended before the live stream
	// was back). When it is nil, OnInterrupted is told for LiveLost, and
	// nothing for LiveCapped, as without the restart.
	OnLiveShort func(stream string, written int64, why LiveShort)
	// OnRunAgain is told when the order starts again after some of its
	// output was written: an idempotent order requeued after its worker
	// stopped. What is written next is the new run's output from its
	// start, and the stored output at the end is that run's.
	OnRunAgain func()
	// LastEventID resumes after this event id (the id of the last event an
	// earlier reader of GET /v1/orders/{id}/events saw) instead of from the
	// order's start. Follow then writes only what the stream delivers from
	// there: it cannot tell which part of the stored output is new.
	LastEventID string
}

// LiveShort says why a stream's live output ended short of its stored
// copy (FollowOptions.OnLiveShort).
type LiveShort int

const (
	// LiveLost: the message bus lost the rest of the live output.
	LiveLost LiveShort = iota + 1
	// LiveCapped: the live output stopped at the order's output cap.
	LiveCapped
)

// errNoSSE says the API has no usable event stream for the order, so the
// follower polls instead.
var errNoSSE = errors.New("event stream unavailable")

// errStreamDropped is a connection that ended before the finished event.
var errStreamDropped = errors.New("event stream dropped")

// Follow waits for an order to finish and writes its output while it
// runs, then returns the finished order. It reads the order's event
// stream, reconnecting with Last-Event-ID when the connection drops (no
// output is lost or repeated); when the API has no usable stream it polls
// the order and writes the stored output at the end. Output the stream
// lost is written from the stored copy when that is complete.
func (c *Client) Follow(ctx context.Context, id string, opts FollowOptions) (*Order, error) {
	f := &follower{c: c, id: id, opts: opts, lastID: opts.LastEventID}
	return f.follow(ctx)
}

// follower is the state of one Follow.
type follower struct {
	c          *Client
	id         string
	opts       FollowOptions
	lastID     string
	lastStatus Status
	written    [2]int64 // bytes of stdout and stderr written
	placed     [2]bool  // a chunk with an offset was seen
	gap        [2]bool  // a chunk past what was written came: a hole, told
	lost       bool     // the API's live stream was lost ("interrupted")
	liveCap    int64    // the live output cap a chunk said it reached (0: none)
	started    bool     // output has begun
}

func (f *follower) follow(ctx context.Context) (*Order, error) {
	failures := 0
	delay := 250 * time.Millisecond
	for {
		o, got, err := f.streamOnce(ctx)
		switch {
		case err == nil && o != nil:
			return o, nil
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case errors.Is(err, errNoSSE):
			return f.poll(ctx)
		case err != nil && !Temporary(err) && !errors.Is(err, errStreamDropped):
			return nil, err
		}
		if got {
			failures, delay = 0, 250*time.Millisecond
		}
		if failures++; failures > sseMaxFailures {
			// The stream keeps failing; polling reports a lasting outage.
			return f.poll(ctx)
		}
		if err := sleep(ctx, delay); err != nil {
			return nil, err
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// streamOnce reads the event stream over one connection. got reports
// whether any event arrived, so reconnect attempts can back off.
func (f *follower) streamOnce(ctx context.Context) (o *Order, got bool, err error) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hdr := http.Header{"Cache-Control": {"no-cache"}}
	if f.lastID != "" {
		hdr.Set("Last-Event-ID", f.lastID)
	}
	resp, err := f.c.send(cctx, request{method: http.MethodGet, path: "/v1/orders/" + pathID(f.id) + "/events", header: hdr, accept: "text/event-stream"})
	if err != nil {
		if hasStatus(err, http.StatusNotFound, http.StatusNotAcceptable, http.StatusNotImplemented) || streamsLimited(err) {
			return nil, false, errNoSSE
		}
		return nil, false, err
	}
	defer resp.Body.Close()
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return nil, false, errNoSSE
	}
	idle := time.AfterFunc(sseIdleTimeout, cancel)
	defer idle.Stop()
	r := newSSEReader(&idleReader{r: resp.Body, t: idle, d: sseIdleTimeout}, sseMaxEvent)
	for {
		ev, err := r.next()
		if err != nil {
			if errors.Is(err, errEventTooLarge) {
				return nil, got, errNoSSE
			}
			return nil, got, errStreamDropped
		}
		got = true
		if f.seen(ev) {
			continue
		}
		o, err := f.handle(ctx, ev)
		if err != nil {
			return nil, got, err
		}
		if ev.HasID {
			f.lastID = ev.ID
		}
		if o != nil {
			return o, got, nil
		}
	}
}

// place returns the part of a chunk at offset of stream i that continues
// what was written, or nil: a repeat is dropped, and so is a chunk past
// a hole (chunks lost, as when the broker's memory stream restarts), so
// that what was written stays a prefix of the output. Placing goes on
// after a hole: the worker publishes a running order's chunks again from
// offset 0 once the stream is back, and those fill it; what none fills
// the stored copy supplies at the end (flushResult). A hole is told once
// until a chunk continues what was written again.
func (f *follower) place(i int, offset int64, b []byte) []byte {
	if !f.placed[i] && f.opts.LastEventID != "" {
		f.written[i] = offset // resumed mid-stream: this is where it starts
	}
	f.placed[i] = true
	rest, gap := order.Continuing(offset, f.written[i], b)
	if len(rest) > 0 {
		f.gap[i] = false
	}
	if gap && !f.gap[i] {
		f.gap[i] = true
		switch {
		case f.opts.LastEventID != "":
			if f.opts.OnMissed != nil {
				// Resumed: there is no stored copy to write the rest from.
				f.opts.OnMissed([2]string{"stdout", "stderr"}[i], offset-f.written[i])
			}
		case f.opts.OnInterrupted != nil:
			f.opts.OnInterrupted([2]string{"stdout", "stderr"}[i], f.written[i])
		}
	}
	return rest
}

// interrupted acts on the API's "interrupted" event: its live stream was
// lost (a NATS restart) and made again. Nothing is told yet: the worker
// publishes the running order's chunks again from offset 0 (hA17), which
// place drops as repeats up to what was written and writes past it, so
// nothing may be missing. A chunk past what was written still tells of
// a hole at once, and the order's end tells of what the live output never
// showed (flushResult), even when no later chunk came.
func (f *follower) interrupted() {
	f.lost = true
}

// seen reports an output chunk replayed by a server that ignored
// Last-Event-ID, when the ids are sequence numbers. Only chunks are
// skipped: the API may give "finished" the id of the last chunk.
func (f *follower) seen(ev sseEvent) bool {
	if (ev.Event != "stdout" && ev.Event != "stderr") || !ev.HasID || f.lastID == "" {
		return false
	}
	var c struct {
		Offset *int64 `json:"offset"`
	}
	if json.Unmarshal(ev.Data, &c) == nil && c.Offset != nil {
		return false // placed by its offset: ids start again with a new stream
	}
	last, err1 := strconv.ParseUint(f.lastID, 10, 64)
	cur, err2 := strconv.ParseUint(ev.ID, 10, 64)
	return err1 == nil && err2 == nil && cur <= last
}

// handle acts on one event; it returns the order on "finished".
func (f *follower) handle(ctx context.Context, ev sseEvent) (*Order, error) {
	switch ev.Event {
	case "queued":
		f.status(StatusQueued)
	case "started":
		if f.placed[0] || f.placed[1] {
			// Started after output of it came: it runs again (an
			// idempotent order requeued after its worker stopped), its
			// chunks from offset 0 again. Placed against the count of
			// the earlier run's bytes, they were taken for repeats of
			// them: the earlier run's beginning, spliced to the new
			// one's end, was written as the order's output.
			f.written, f.placed, f.gap, f.lost, f.liveCap = [2]int64{}, [2]bool{true, true}, [2]bool{}, false, 0
			if f.opts.OnRunAgain != nil {
				f.opts.OnRunAgain()
			}
		}
		f.status(StatusRunning)
	case "stdout", "stderr":
		var chunk Chunk
		if err := json.Unmarshal(ev.Data, &chunk); err != nil {
			return nil, fmt.Errorf("order %s: bad %s event from the API: %v", f.id, ev.Event, err)
		}
		b, err := chunk.Decode()
		if err != nil {
			return nil, fmt.Errorf("order %s: %s event: %w", f.id, ev.Event, err)
		}
		i := 0
		if ev.Event == "stderr" {
			i = 1
		}
		if chunk.LiveCap != nil {
			// Seen even as a repeat: it says where live output ends.
			f.liveCap = *chunk.LiveCap
		}
		if chunk.Offset != nil {
			if b = f.place(i, *chunk.Offset, b); b == nil {
				return nil, nil
			}
		}
		if err := f.write(i, b); err != nil {
			return nil, err
		}
	case "interrupted":
		f.interrupted()
	case "finished":
		var o Order
		if err := json.Unmarshal(ev.Data, &o); err != nil || o.ID == uuid.Nil || !o.Status.Terminal() {
			// Not the full order after all: read it.
			got, err := f.c.Get(ctx, f.id)
			if err != nil {
				return nil, err
			}
			if !got.Status.Terminal() {
				return nil, errStreamDropped
			}
			o = *got
		}
		if err := f.flushResult(&o); err != nil {
			return nil, err
		}
		return &o, nil
	case "error":
		var env struct {
			Error ErrorDetail `json:"error"`
		}
		if json.Unmarshal(ev.Data, &env) == nil && env.Error.Message != "" {
			return nil, &Error{Code: env.Error.Code, Message: env.Error.Message, Details: env.Error.Details}
		}
	}
	return nil, nil
}

// streamsLimited reports a stream refused because the principal holds
// as many open as the API allows (limits.max_streams_per_principal),
// after the retries send made: polling holds none, and the order,
// already submitted, still gets followed to its end.
func streamsLimited(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusTooManyRequests && e.Details["scope"] == "streams"
}

// poll reads the order until it is final, then writes its stored output
// (what the event stream did not already deliver).
func (f *follower) poll(ctx context.Context) (*Order, error) {
	delay := 100 * time.Millisecond
	var failingSince time.Time
	var last *Order // its ETag makes every read after the first conditional
	for {
		var o *Order
		var err error
		if last == nil {
			o, err = f.c.Get(ctx, f.id)
		} else {
			o, _, err = f.c.Refresh(ctx, last)
		}
		switch {
		case err == nil:
			last = o
			failingSince = time.Time{}
			if o.Status.Terminal() {
				if err := f.flushResult(o); err != nil {
					return nil, err
				}
				return o, nil
			}
			f.status(o.Status)
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case Temporary(err):
			if failingSince.IsZero() {
				failingSince = time.Now()
			} else if time.Since(failingSince) > apiOutageTolerate {
				return nil, err
			}
		default:
			return nil, err
		}
		if err := sleep(ctx, delay); err != nil {
			return nil, err
		}
		delay = min(delay*3/2, pollMaxDelay)
	}
}

func (f *follower) status(s Status) {
	if s != f.lastStatus {
		f.lastStatus = s
		if f.opts.OnStatus != nil {
			f.opts.OnStatus(s)
		}
	}
}

// write copies a chunk of stream i (0 stdout, 1 stderr).
func (f *follower) write(i int, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	f.written[i] += int64(len(b))
	w := f.opts.Stdout
	if i == 1 {
		w = f.opts.Stderr
	}
	if w == nil {
		return nil
	}
	if !f.started {
		f.started = true
		if f.opts.BeforeOutput != nil {
			f.opts.BeforeOutput()
		}
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// flushResult writes the part of the stored output that was not streamed:
// all of it after polling, the rest after a stream that lost chunks or
// stopped at the live cap. Of a truncated stored copy, what its head and
// tail hold past what was written is written, with the copy's truncation
// marker for the bytes neither holds (told to OnMissed too): the end of a
// long command's output is what its follower most needs.
func (f *follower) flushResult(o *Order) error {
	if o.Result == nil || f.opts.LastEventID != "" {
		return nil
	}
	live := f.written // before any of the stored copy is written
	for i, s := range []Stream{o.Result.Stdout, o.Result.Stderr} {
		if s.Content == "" || (f.written[i] > 0 && f.written[i] >= s.Bytes) {
			continue
		}
		if f.lost && !f.gap[i] {
			f.short(i, live)
		}
		b, err := s.Decode()
		if err != nil {
			return fmt.Errorf("order %s: %w", o.ID, err)
		}
		switch head, tail, ok := (order.Output{Content: b, Bytes: s.Bytes, Truncated: true}).HeadAndTail(); {
		case f.written[i] == 0:
			// Nothing streamed: the stored copy (with its truncation marker if capped).
		case !s.Truncated && f.written[i] <= int64(len(b)):
			b = b[f.written[i]:]
		case s.Truncated && ok:
			if err := f.writeAround(i, head, tail, s.Bytes); err != nil {
				return err
			}
			continue
		default:
			if f.opts.OnMissed != nil {
				f.opts.OnMissed([2]string{"stdout", "stderr"}[i], s.Bytes-f.written[i])
			}
			continue
		}
		if err := f.write(i, b); err != nil {
			return err
		}
	}
	return nil
}

// short tells why stream i's live output (live: the bytes of stdout and
// stderr written live), after the API's live stream was lost, ended
// short of its stored copy: at the live output cap, when a chunk said it
// reached it and every byte up to it was written (the cap counts stdout
// and stderr together), else because the bus lost the rest and what came
// again did not reach the order's end (a worker that does not publish
// again, or an order that ended before the stream was back).
func (f *follower) short(i int, live [2]int64) {
	stream := [2]string{"stdout", "stderr"}[i]
	why := LiveLost
	if f.liveCap > 0 && live[0]+live[1] >= f.liveCap {
		why = LiveCapped
	}
	switch {
	case f.opts.OnLiveShort != nil:
		f.opts.OnLiveShort(stream, live[i], why)
	case why == LiveLost && f.opts.OnInterrupted != nil:
		f.opts.OnInterrupted(stream, live[i])
	}
}

// writeAround writes, of a stream of total bytes whose stored copy kept
// head and tail, what follows the bytes already written: the rest of the
// head, a truncation marker for what neither part holds, the tail (or
// what of it was not written).
func (f *follower) writeAround(i int, head, tail []byte, total int64) error {
	if w := f.written[i]; w < int64(len(head)) {
		if err := f.write(i, head[w:]); err != nil {
			return err
		}
	}
	tailAt := total - int64(len(tail))
	if missed := tailAt - f.written[i]; missed > 0 {
		if f.opts.OnMissed != nil {
			f.opts.OnMissed([2]string{"stdout", "stderr"}[i], missed)
		}
		if err := f.write(i, []byte(order.TruncationMarker(missed))); err != nil {
			return err
		}
		f.written[i] = tailAt // the marker stands for the missed bytes
	}
	return f.write(i, tail[f.written[i]-tailAt:])
}

// idleReader cancels the connection (through t) when no byte arrives for d.
type idleReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.t.Reset(r.d)
	}
	return n, err
}
