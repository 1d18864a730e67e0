package main

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
	"golang.org/x/sys/unix"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/order"
)

// Tuning of the follower. The idle limit only forces a reconnect (which
// resumes with Last-Event-ID), so it may be short of a quiet command's
// silence without losing anything.
const (
	sseMaxEvent       = 32 << 20
	sseIdleTimeout    = 90 * time.Second
	sseMaxFailures    = 8 // consecutive reconnects without an event, then poll
	pollMaxDelay      = time.Second
	apiOutageTolerate = 30 * time.Second
)

// errNoSSE says the API has no usable event stream for the order, so the
// follower polls instead.
var errNoSSE = errors.New("event stream unavailable")

// follower waits for one order to finish and copies its output to stdout
// and stderr as raw bytes while it runs: over the SSE endpoint when the API
// has it (reconnecting with Last-Event-ID), otherwise by polling the order
// and writing its stored output at the end.
type follower struct {
	c              *apiClient
	id             string
	stdout, stderr io.Writer
	// quiet suppresses output (the caller prints the final order as JSON).
	quiet bool
	// onStatus, if set, is told "queued" and "running" as they are seen.
	onStatus func(status string)
	// beforeOutput, if set, runs once before the first output byte.
	beforeOutput func()
	// warn receives the follower's own notes (missed output).
	warn io.Writer

	lastID     string
	lastStatus string
	written    [2]int64 // bytes written of stdout and stderr
	started    bool     // output has begun
}

// follow returns the finished order and its JSON as the API sent it.
func (f *follower) follow(ctx context.Context) (*api.Order, []byte, error) {
	failures := 0
	delay := 250 * time.Millisecond
	for {
		o, raw, got, err := f.streamOnce(ctx)
		switch {
		case err == nil && o != nil:
			return o, raw, nil
		case ctx.Err() != nil:
			return nil, nil, ctx.Err()
		case errors.Is(err, errNoSSE):
			return f.poll(ctx)
		case err != nil && !temporary(err) && !errors.Is(err, errStreamDropped):
			return nil, nil, err
		}
		if got {
			failures, delay = 0, 250*time.Millisecond
		}
		if failures++; failures > sseMaxFailures {
			// The stream keeps failing; polling reports a lasting outage.
			return f.poll(ctx)
		}
		if err := sleepCtx(ctx, delay); err != nil {
			return nil, nil, err
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// errStreamDropped is a connection that ended before the finished event.
var errStreamDropped = errors.New("event stream dropped")

// streamOnce reads the event stream over one connection. got reports
// whether any event arrived, so reconnect attempts can back off.
func (f *follower) streamOnce(ctx context.Context) (o *api.Order, raw []byte, got bool, err error) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hdr := http.Header{"Cache-Control": {"no-cache"}}
	if f.lastID != "" {
		hdr.Set("Last-Event-ID", f.lastID)
	}
	resp, err := f.c.send(cctx, request{method: http.MethodGet, path: "/v1/orders/" + f.id + "/events", header: hdr, accept: "text/event-stream"})
	if err != nil {
		if isStatus(err, http.StatusNotFound, http.StatusNotAcceptable, http.StatusNotImplemented) {
			return nil, nil, false, errNoSSE
		}
		return nil, nil, false, err
	}
	defer resp.Body.Close()
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return nil, nil, false, errNoSSE
	}
	idle := time.AfterFunc(sseIdleTimeout, cancel)
	defer idle.Stop()
	r := newSSEReader(&idleReader{r: resp.Body, t: idle, d: sseIdleTimeout}, sseMaxEvent)
	for {
		ev, err := r.next()
		if err != nil {
			if errors.Is(err, errEventTooLarge) {
				return nil, nil, got, errNoSSE
			}
			return nil, nil, got, errStreamDropped
		}
		got = true
		if f.seen(ev) {
			continue
		}
		o, raw, err := f.handle(ctx, ev)
		if err != nil {
			return nil, nil, got, err
		}
		if ev.HasID {
			f.lastID = ev.ID
		}
		if o != nil {
			return o, raw, got, nil
		}
	}
}

// seen reports an output chunk replayed by a server that ignored
// Last-Event-ID, when the ids are sequence numbers. Only chunks are
// skipped: the API may give "finished" the id of the last chunk.
func (f *follower) seen(ev sseEvent) bool {
	if (ev.Event != "stdout" && ev.Event != "stderr") || !ev.HasID || f.lastID == "" {
		return false
	}
	last, err1 := strconv.ParseUint(f.lastID, 10, 64)
	cur, err2 := strconv.ParseUint(ev.ID, 10, 64)
	return err1 == nil && err2 == nil && cur <= last
}

// handle acts on one event; it returns the order on "finished".
func (f *follower) handle(ctx context.Context, ev sseEvent) (*api.Order, []byte, error) {
	switch ev.Event {
	case "queued":
		f.status("queued")
	case "started":
		f.status("running")
	case "stdout", "stderr":
		var chunk api.Chunk
		if err := json.Unmarshal(ev.Data, &chunk); err != nil {
			return nil, nil, fmt.Errorf("order %s: bad %s event from the API: %v", f.id, ev.Event, err)
		}
		b, err := decodeOutput(chunk.Data, chunk.Encode)
		if err != nil {
			return nil, nil, fmt.Errorf("order %s: %s event: %w", f.id, ev.Event, err)
		}
		i := 0
		if ev.Event == "stderr" {
			i = 1
		}
		if err := f.write(i, b); err != nil {
			return nil, nil, err
		}
	case "finished":
		var o api.Order
		raw := ev.Data
		if err := json.Unmarshal(raw, &o); err != nil || o.ID == uuid.Nil || !orderTerminal(&o) {
			// Not the full order after all: read it.
			var err error
			if raw, err = f.c.call(ctx, request{method: http.MethodGet, path: "/v1/orders/" + f.id}, &o); err != nil {
				return nil, nil, err
			}
			if !orderTerminal(&o) {
				return nil, nil, errStreamDropped
			}
		}
		if err := f.flushResult(&o); err != nil {
			return nil, nil, err
		}
		return &o, raw, nil
	case "error":
		var env api.ErrorBody
		if json.Unmarshal(ev.Data, &env) == nil && env.Error.Message != "" {
			return nil, nil, &apiError{Code: string(env.Error.Code), Message: env.Error.Message, Details: env.Error.Details}
		}
	}
	return nil, nil, nil
}

// poll reads the order until it is terminal, then writes its stored
// output (what the event stream did not already deliver).
func (f *follower) poll(ctx context.Context) (*api.Order, []byte, error) {
	delay := 100 * time.Millisecond
	var failingSince time.Time
	for {
		var o api.Order
		raw, err := f.c.call(ctx, request{method: http.MethodGet, path: "/v1/orders/" + f.id}, &o)
		switch {
		case err == nil:
			failingSince = time.Time{}
			if orderTerminal(&o) {
				if err := f.flushResult(&o); err != nil {
					return nil, nil, err
				}
				return &o, raw, nil
			}
			f.status(string(o.Status))
		case ctx.Err() != nil:
			return nil, nil, ctx.Err()
		case temporary(err):
			if failingSince.IsZero() {
				failingSince = time.Now()
			} else if time.Since(failingSince) > apiOutageTolerate {
				return nil, nil, err
			}
		default:
			return nil, nil, err
		}
		if err := sleepCtx(ctx, delay); err != nil {
			return nil, nil, err
		}
		delay = min(delay*3/2, pollMaxDelay)
	}
}

func (f *follower) status(s string) {
	if s != f.lastStatus {
		f.lastStatus = s
		if f.onStatus != nil {
			f.onStatus(s)
		}
	}
}

// write copies a chunk of stream i (0 stdout, 1 stderr).
func (f *follower) write(i int, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	f.written[i] += int64(len(b))
	if f.quiet {
		return nil
	}
	if !f.started {
		f.started = true
		if f.beforeOutput != nil {
			f.beforeOutput()
		}
	}
	w := f.stdout
	if i == 1 {
		w = f.stderr
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// flushResult writes the part of the stored output that was not streamed:
// all of it after polling, the rest after a stream that lost chunks.
func (f *follower) flushResult(o *api.Order) error {
	if o.Result == nil {
		return nil
	}
	for i, s := range []api.Stream{o.Result.Stdout, o.Result.Stderr} {
		if s.Content == "" || (f.written[i] > 0 && f.written[i] >= s.Bytes) {
			continue
		}
		b, err := decodeOutput(s.Content, s.Encode)
		if err != nil {
			return fmt.Errorf("order %s: %w", o.ID, err)
		}
		switch {
		case f.written[i] == 0:
			// Nothing streamed: the stored copy (with its truncation marker if capped).
		case !s.Truncated && f.written[i] <= int64(len(b)):
			b = b[f.written[i]:]
		default:
			if f.warn != nil && !f.quiet {
				fmt.Fprintf(f.warn, "orderly: order %s: %d bytes of %s were missed and the stored copy is truncated\n",
					o.ID, s.Bytes-f.written[i], [2]string{"stdout", "stderr"}[i])
			}
			continue
		}
		if err := f.write(i, b); err != nil {
			return err
		}
	}
	return nil
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

// exitOf maps a finished order to the CLI's exit, like ssh does for a
// remote command: succeeded → nil (exit 0); failed with an exit code → that
// code; ended by a signal (failed, killed or timed_out) → 128+signal, after
// a note on stderr; any other outcome (timed_out or killed without a known
// signal, rejected, canceled, expired, interrupted, a failure to start) →
// an error, which main prints as "orderly: …" with exit status 1.
func exitOf(stderr io.Writer, o *api.Order) error {
	res := o.Result
	if res == nil {
		res = &api.Result{}
	}
	detail := ""
	if res.Error != nil && *res.Error != "" {
		detail = ": " + *res.Error
	}
	switch o.Status {
	case order.StatusSucceeded:
		return nil
	case order.StatusFailed, order.StatusKilled, order.StatusTimedOut:
		if res.Signal != nil && *res.Signal != "" {
			if n := unix.SignalNum(*res.Signal); n != 0 {
				what := map[order.Status]string{order.StatusFailed: "ended by", order.StatusKilled: "killed with", order.StatusTimedOut: "timed out; ended by"}[o.Status]
				fmt.Fprintf(stderr, "orderly: order %s %s %s%s\n", o.ID, what, *res.Signal, detailIfNew(detail, o.Status))
				return exitCodeError(128 + int(n))
			}
		}
		if o.Status == order.StatusFailed && res.ExitCode != nil && *res.ExitCode != 0 {
			return exitCodeError(*res.ExitCode)
		}
	}
	return fmt.Errorf("order %s %s%s", o.ID, o.Status, detail)
}

// detailIfNew drops an error text that only repeats the status.
func detailIfNew(detail string, status order.Status) string {
	if status == order.StatusTimedOut && detail == ": timed out" {
		return ""
	}
	return detail
}
