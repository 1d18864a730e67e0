package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
)

// Chunk is the data of a stdout or stderr SSE event. Offset is where in
// its stream the chunk starts (absent from workers older than it): event
// ids are live-stream sequences, which start again when that memory stream
// is lost (a NATS restart), so a follower places chunks by offset.
//
// LiveCap is on the chunk that reached the order's live output cap (the
// worker's worker.max_output_bytes, for stdout and stderr together: its
// value): nothing of the order's output comes live after it, and the
// stored output has the rest when the order ends. A follower that was
// told "interrupted" can so tell live output that stopped at the cap
// from live output the message bus lost.
type Chunk struct {
	Data    string  `json:"data"`
	Encode  *string `json:"encode"`
	Offset  *int64  `json:"offset,omitempty"`
	LiveCap *int64  `json:"live_cap,omitempty"`
}

// liveInterrupted is the message of an SSE "interrupted" event.
const liveInterrupted = "live output was interrupted (the message bus lost its live stream): output may be missing from this stream; the order's stored output has it when the order ends"

// credentialRecheck is how often a live stream checks the credential it
// was opened with: a token removed by a reload, or a JWT past its expiry,
// ends the streams it opened within this time.
const credentialRecheck = 2 * time.Second

// mayStillRead reports whether the request's credential still
// authenticates and still lets its principal read o.
func (s *Server) mayStillRead(r *http.Request, o *order.Order) bool {
	p, err := s.Auth().Authenticate(r.Header.Get("Authorization"))
	return err == nil && p.Name == principalOf(r).Name && (seesAll(p) || o.Principal == p.Name)
}

// liveFullRetry is the Retry-After of a follower refused because the
// live stream is at its cap on consumers: followers of running orders
// come and go by the second.
const liveFullRetry = 5

// liveUnavailable is the answer to a follow whose live feed could not
// start (err, queue.Live's): a 503, which says when to come back when
// the live stream's cap on consumers refused it (queue.ErrLiveFull).
func liveUnavailable(err error) *order.Error {
	if errors.Is(err, queue.ErrLiveFull) {
		return &order.Error{Code: order.CodeUnavailable,
			Message: "live events unavailable: too many followers, the message bus's cap on the live stream's consumers (one per follower) is reached; try again later",
			Details: map[string]any{"reason": "live_followers_cap", "retry_after_seconds": int64(liveFullRetry)}, Err: err}
	}
	return &order.Error{Code: order.CodeUnavailable, Message: "live events unavailable", Err: err}
}

// setEventStreamHeaders sets an event stream's headers. no-store, as
// every answer of the API (apiHeaders): a stream carries the order's
// output, and a finished order's ends, whole, where a browser's fetch
// (the only way to send a bearer token with it) would keep it in its
// disk cache under no-cache.
func setEventStreamHeaders(h http.Header) {
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
}

// handleEvents is GET /v1/orders/{id}/events: Server-Sent Events with the
// order's queued, started, stdout, stderr and finished events. Live events
// come from the JetStream live stream, so any replica can serve them and a
// client resumes with Last-Event-ID (the stream sequence) without loss. An
// order that finished long ago replays what is left and ends with
// finished, read from PostgreSQL. A HEAD gets the stream's headers only.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	q, err := queryOf(r, []string{"outputs"})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var f postgres.Filter
	if err := outputsOf(q, &f); err != nil {
		s.writeError(w, r, err)
		return
	}
	// The stream needs the order's host, principal and status, not its
	// outputs: an order that finished with megabytes is not read whole
	// for it.
	o, err := s.pathOrderLean(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	id := o.ID
	// finished is the order as GET /v1/orders/{id} answers it, or with
	// ?outputs=none as GET /v1/orders?outputs=none lists it: no content,
	// neither read nor sent (the run page reads only the status; the
	// output of seq 1 200000 made a 1.5 MB event).
	finished := func(ctx context.Context) (any, error) {
		if f.NoOutputs {
			cur, err := s.Store.GetOrderWithoutOutputs(ctx, id)
			if err != nil {
				return nil, err
			}
			resp := noOutputResponse(cur)
			resp.Cancel = s.cancellationOf(ctx, cur)
			return resp, nil
		}
		cur, err := s.Store.GetOrder(ctx, id)
		if err != nil {
			return nil, err
		}
		return s.withCancellation(ctx, cur), nil
	}
	var after uint64
	resumed := false
	v, err := headerOnce(r, "Last-Event-ID")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if v != "" {
		// The largest uint64 is no event's id (the stream would start
		// after it, at 0).
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == math.MaxUint64 {
			s.writeError(w, r, order.FieldError(order.CodeInvalid, "Last-Event-ID", "Last-Event-ID must be an event id from this stream"))
			return
		}
		after, resumed = n, true
	}
	if r.Method == http.MethodHead {
		// What a GET would start, without the stream: it would end only
		// with the order.
		setEventStreamHeaders(w.Header())
		w.WriteHeader(http.StatusOK)
		return
	}
	release, err := s.HoldStream(principalOf(r).Name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer release()
	ctx := r.Context()
	cons, err := s.Queue.Live(ctx, o.Host, id, after)
	if err != nil {
		s.writeError(w, r, liveUnavailable(err))
		return
	}
	// SSE outlives any write timeout; it ends with the order, the client or
	// the server's shutdown (ctx).
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	setEventStreamHeaders(w.Header())
	w.WriteHeader(http.StatusOK)

	// send writes one event; noID for an event that is not in the live
	// stream (it would otherwise repeat the id of the last real event).
	const noID = ^uint64(0)
	send := func(id uint64, event string, data any) bool {
		b, err := json.Marshal(data)
		if err != nil {
			return false
		}
		if id != noID {
			_, err = fmt.Fprintf(w, "id: %d\n", id)
		}
		if err == nil {
			_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b)
		}
		return err == nil && rc.Flush() == nil
	}
	if !resumed {
		send(0, "queued", map[string]any{"order_id": o.ID, "host": o.Host, "status": order.StatusQueued, "submitted_at": o.SubmittedAt})
	}
	finish := func(seq uint64) {
		if v, err := finished(context.WithoutCancel(ctx)); err == nil {
			send(seq, "finished", v)
		}
	}

	defer cons.Stop()
	msgs := cons.Messages(ctx)
	outputSubject, eventSubject := queue.OutputSubjectOf(o.Host, id), queue.EventSubjectOf(o.Host, id)
	idle := time.NewTicker(500 * time.Millisecond)
	defer idle.Stop()
	lastSeq := after
	// runs skips a late chunk of an earlier run of the order (a thawed
	// worker's, flushed among the next run's), as the stored partial
	// output does. A stream resumed after an id knows only the runs it
	// reads from there.
	var runs queue.LiveRuns
	quiet := 0
	checked := time.Now()
	for {
		// A stream may last as long as the order: the credential it was
		// opened with must still be good, and still read this order.
		if time.Since(checked) >= credentialRecheck {
			if !s.mayStillRead(r, o) {
				return
			}
			checked = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case m, ok := <-msgs:
			if !ok {
				return
			}
			quiet = 0
			if m == queue.LiveLost {
				// The live stream was lost (a NATS restart) and made
				// again: what the order printed meanwhile comes only
				// with its stored output. Said at once, so a follower
				// that sees no later chunk knows; its id 0 is where the
				// new stream's ids start (a reconnect resumes there).
				lastSeq = 0
				if !send(0, "interrupted", map[string]any{"order_id": id, "message": liveInterrupted}) {
					return
				}
				continue
			}
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			lastSeq = meta.Sequence.Stream
			// Only the order's host's worker may publish on its subjects
			// (NATS permissions); anything else is dropped, never shown.
			switch m.Subject {
			case outputSubject:
				if m.Header.Get(queue.StreamHeader) == "" {
					// No chunk: the end marker an older worker leaves
					// once the result is stored, after finished.
					continue
				}
				if runs.Earlier(m.Header.Get(nats.MsgIdHdr)) {
					continue
				}
			case eventSubject:
				if m.Header.Get(queue.StreamHeader) != "" {
					continue
				}
			default:
				continue
			}
			if stream := m.Header.Get(queue.StreamHeader); stream != "" {
				content, enc := order.Encode(m.Data, order.EncodeText)
				var e *string
				if enc != order.EncodeText {
					es := string(enc)
					e = &es
				}
				c := Chunk{Data: content, Encode: e}
				if off, err := strconv.ParseInt(m.Header.Get(queue.OffsetHeader), 10, 64); err == nil && off >= 0 {
					c.Offset = &off
				}
				if limit, err := strconv.ParseInt(m.Header.Get(queue.LiveCapHeader), 10, 64); err == nil && limit > 0 {
					c.LiveCap = &limit
				}
				if !send(lastSeq, stream, c) {
					return
				}
				continue
			}
			var ev queue.Event
			if json.Unmarshal(m.Data, &ev) != nil || ev.OrderID != id {
				continue
			}
			switch {
			case ev.Type == "started":
				if !send(lastSeq, "started", map[string]any{"order_id": id, "status": ev.Status}) {
					return
				}
			case ev.Type == "unclaimed":
				// Handed back before its command started (its worker
				// stopped while the order waited for a file
				// descriptor): queued again, as PostgreSQL holds it,
				// until a worker starts it (another started).
				if !send(lastSeq, "queued", map[string]any{"order_id": id, "host": o.Host, "status": order.StatusQueued,
					"submitted_at": o.SubmittedAt, "handed_back": true}) {
					return
				}
			case order.Status(ev.Status).Terminal():
				finish(lastSeq)
				return
			}
		case <-idle.C:
			// The live stream keeps a finished order's last event for a
			// minute (queue.Options.FinishedTTL); for one finished before
			// that, or whose events were lost, PostgreSQL has the end.
			quiet++
			if quiet%4 == 0 {
				if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
					return
				}
			}
			// Only a fallback: read PostgreSQL after a quiet second, then
			// every two seconds, not on every tick of every client; after
			// the first quiet tick already when the order had finished
			// before the client came.
			if quiet%4 != 2 && (quiet != 1 || !o.Status.Terminal()) {
				continue
			}
			cur, err := s.Store.GetOrderWithoutOutputs(ctx, id)
			if err != nil {
				if errors.Is(err, context.Canceled) {
					return
				}
				continue
			}
			if cur.Status.Terminal() {
				v, err := finished(ctx)
				if errors.Is(err, context.Canceled) {
					return
				}
				if err == nil {
					send(noID, "finished", v)
					return
				}
			}
		}
	}
}
