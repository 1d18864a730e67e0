package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
)

// IntakeAnswer is what a NATS publisher receives on its Orderly-Reply
// subject: the accepted order, or the error envelope of the REST API.
type IntakeAnswer struct {
	Order *Order       `json:"order,omitempty"`
	Error *ErrorDetail `json:"error,omitempty"`
}

// Intake tuning. A lane retries a submission that failed for a reason that
// is not the publisher's (PostgreSQL or NATS down) in place, since letting
// the next one of its host go first would reorder them.
const (
	intakeParallelHosts = 32
	intakeAttemptLimit  = 15 * time.Second // one attempt at one submission
	intakeRetryFirst    = 100 * time.Millisecond
	intakeRetryMax      = 5 * time.Second
	// pinCheckAfter: when this replica last confirmed its pin longer ago
	// than this (a frozen process, a long retry, a quiet stream), it
	// confirms it again before it dispatches or takes up anything.
	pinCheckAfter = time.Second
)

// RunNATSIntake takes orders published to orderly.submit.<host> and runs
// each through exactly the REST path: authentication from the
// Authorization header, the principal's rate limit, the same decoding,
// validation, authorization and audit. Nats-Msg-Id becomes the idempotency
// key. Only the replica the intake consumer is pinned to receives; the
// others wait to take over (docs/decisions.md). Every replica also sweeps
// the submissions nats.go cannot deliver (sweepIntake). It returns when ctx
// ends.
func (s *Server) RunNATSIntake(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() { defer wg.Done(); s.sweepIntake(ctx) }()
	for {
		err := s.runIntake(ctx)
		if ctx.Err() != nil {
			return nil
		}
		s.logger.Warn("nats intake interrupted; starting again", "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// intakeEpoch is one stretch of intake under one pin. Deliveries belong to
// the epoch they arrived in and are dropped, unacknowledged, once it is
// over: the replica pinned next rewinds the consumer and receives them
// again, in stream order.
type intakeEpoch struct {
	pin       string
	through   uint64 // stream sequences up to this one may have been taken before the rewind
	lost      chan struct{}
	once      sync.Once
	confirmed atomic.Int64 // unix ns of the last confirmation of the pin
}

func newEpoch(pin string, through uint64) *intakeEpoch {
	e := &intakeEpoch{pin: pin, through: through, lost: make(chan struct{})}
	e.confirmed.Store(time.Now().UnixNano())
	return e
}

// lose ends the epoch: the pin is gone.
func (e *intakeEpoch) lose() { e.once.Do(func() { close(e.lost) }) }

// pinned reports whether this replica may go on under the epoch's pin: at
// once when the pin was confirmed less than pinCheckAfter ago, else after
// asking the server (always when force is set). A replica that froze or
// stalled past the pinned TTL finds out here, before it takes up what it
// received before the stall (its client may deliver that only now, so the
// time of delivery says nothing), and ends the epoch.
func (e *intakeEpoch) pinned(ctx context.Context, q *queue.Queue, force bool) (bool, error) {
	if !force && time.Since(time.Unix(0, e.confirmed.Load())) < pinCheckAfter {
		return true, nil
	}
	ok, err := q.IntakePinned(ctx, e.pin)
	if err != nil {
		return false, err
	}
	if !ok {
		e.lose()
		return false, nil
	}
	e.confirmed.Store(time.Now().UnixNano())
	return true, nil
}

// delivery is one submission as the pinned replica received it.
type delivery struct {
	msg   jetstream.Msg
	host  string
	epoch *intakeEpoch
	// counted: this submission was counted against its principal's rate
	// limit already, by an earlier attempt of this lane (a retry in place
	// is the same request) or by a replica that died before acknowledging
	// it, and is not counted again. Counted at each attempt, a few retries
	// through a PostgreSQL or NATS failure refused it as rate_limited,
	// after its order may have been recorded.
	counted bool
	// beforeConsumer: stored before the intake consumer it came through
	// was created, so a replica may have taken it up under a consumer
	// since lost (a single nats-server's restart, which loses the
	// consumer it keeps in memory; an upgrade that replaced it), and it
	// comes as a first delivery all the same. Looked up as a counted one
	// is (its record, a refusal to withdraw); unlike one, counted when
	// nothing is found.
	beforeConsumer bool
	key            string // the idempotency key
	// id is the order id of this stored message (submissionID): every
	// replica that takes it up gives its order the same one, so that a
	// submission taken up before can be found without knowing who sent it.
	id uuid.UUID
	// stored is when ORDERLY_SUBMIT stored the message.
	stored time.Time
	// recorded is the order an earlier attempt of this lane recorded but
	// could not publish to its host's stream: the submission was accepted
	// then, and what is left to retry is the publish.
	recorded *order.Order
}

// runIntake consumes until ctx ends or the consumer fails. Each time a
// delivery shows this replica newly pinned, it drops what it holds, waits
// for its lanes, rewinds the consumer to the ack floor and starts over:
// from then on it receives every unacknowledged submission in stream order.
func (s *Server) runIntake(ctx context.Context) error {
	cons, err := s.Queue.IntakeConsumer(ctx)
	if err != nil {
		return err
	}
	// Messages stored before it are suspects (delivery.beforeConsumer).
	created := cons.CachedInfo().Created.Add(consumerClockSkew)
	var cur atomic.Pointer[intakeEpoch]
	next := func(pin string, through uint64) { cur.Store(newEpoch(pin, through)) }
	next("", 0)
	ln := newLanes(intakeParallelHosts, func(d *delivery) {
		s.intakeLane(ctx, func() bool { return cur.Load() == d.epoch }, d)
	})
	kctx, stopKeeping := context.WithCancel(ctx)
	defer stopKeeping()
	go keepInProgress(kctx, ln)
	for {
		first, err := s.dispatchIntake(ctx, cons, created, cur.Load(), ln)
		next("", 0) // the lanes drop what they still hold
		ln.wait()
		if err != nil {
			return err
		}
		if first == nil {
			continue // pin lost: wait to be pinned again
		}
		through, born, err := s.Queue.RewindIntake(ctx)
		if err != nil {
			return err
		}
		// The consumer this replica is pinned to now: one made again by
		// another replica (a restart lost it without a word to this one,
		// whose pulls went on to the new one) holds as new what was
		// stored before it, whatever this handle's creation said.
		created = born.Add(consumerClockSkew)
		// New messages are delivered in stream order, so when the first
		// one this replica got under its pin was delivered for the first
		// time, nobody before it can have taken that one or any later one.
		if meta, err := first.Metadata(); err == nil && meta.NumDelivered == 1 {
			through = min(through, meta.Sequence.Stream-1)
		}
		s.logger.Info("nats intake pinned to this replica", "redelivered_through", through)
		next(pinOf(first), through)
	}
}

// intakeGone returns the server's answer when the intake consumer or its
// stream no longer exists, after creating the streams again when the
// orders stream is gone too (as /readyz does); nil otherwise, a server
// that does not answer included.
func (s *Server) intakeGone(ctx context.Context, cons jetstream.Consumer) error {
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := cons.Info(ictx)
	if !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if cerr := s.Queue.CheckStreams(ictx); cerr != nil {
		s.logger.Warn("nats intake: its consumer is gone and the streams cannot be checked", "error", cerr)
	}
	return err
}

// dispatchIntake hands the deliveries of ep's pin to the lanes. It returns
// the first delivery that arrives under another pin (not taken up: it comes
// again after the rewind), nil when a lane found the pin lost, or an error.
func (s *Server) dispatchIntake(ctx context.Context, cons jetstream.Consumer, created time.Time, ep *intakeEpoch, ln *lanes) (jetstream.Msg, error) {
	it, err := cons.Messages(jetstream.PullPriorityGroup(queue.IntakeGroup), jetstream.PullExpiry(queue.IntakePullExpiry))
	if err != nil {
		return nil, fmt.Errorf("pull from the intake consumer: %w", err)
	}
	defer queue.StopIterator(it)
	nctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-ep.lost:
			cancel()
		case <-nctx.Done():
		}
	}()
	for {
		msg, err := it.Next(jetstream.NextContext(nctx))
		switch {
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case nctx.Err() != nil:
			s.logger.Warn("nats intake: this replica is no longer pinned; dropping what it holds")
			return nil, nil
		case errors.Is(err, jetstream.ErrMsgIteratorClosed), errors.Is(err, jetstream.ErrConsumerDeleted),
			errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrBadRequest):
			return nil, fmt.Errorf("pull from the intake consumer: %w", err)
		case err != nil:
			// A missed heartbeat or a reconnect: the iterator pulls again,
			// unless the consumer is gone without a word (nats-server back
			// with its store lost): then start over, which creates it.
			if gone := s.intakeGone(ctx, cons); gone != nil {
				return nil, fmt.Errorf("pull from the intake consumer: %w", gone)
			}
			continue
		}
		if msg.Headers() == nil {
			// nats.go could not decode the header block the publisher
			// stored (a line without a colon): it hands the message over
			// with no headers, the server's Nats-Pin-Id included. Taken
			// for the first delivery of a new pin, it cost two rewinds of
			// the intake; refused now, whatever the epoch, as a forged
			// Nats-Pin-Id is (its Orderly-Reply unreadable: no answer).
			s.intakeOne(ctx, &delivery{msg: msg, epoch: ep})
			continue
		}
		if len(msg.Headers().Values("Nats-Pin-Id")) > 1 {
			// The publisher set the server's header too, and nats.go took
			// its value for the pin of the next pulls, which the server
			// refuses until it pins anew. Refused and acknowledged now,
			// whatever the epoch (left for the rewind, it came first again
			// and did the same, for good), and unpinned, so that the
			// server pins at once instead of after the pinned TTL. The
			// epoch ends with the pin: what the lanes hold comes again.
			s.intakeOne(ctx, &delivery{msg: msg, epoch: ep})
			if err := s.Queue.UnpinIntake(ctx); err != nil {
				s.logger.Warn("nats intake: cannot unpin after a forged Nats-Pin-Id", "error", err)
			}
			ep.lose()
			continue
		}
		if pinOf(msg) != ep.pin {
			return msg, nil
		}
		if ok, err := ep.pinned(ctx, s.Queue, false); !ok {
			if err != nil {
				s.logger.Warn("nats intake: cannot confirm this replica's pin; starting over", "error", err)
			} else {
				s.logger.Warn("nats intake: this replica is no longer pinned; dropping what it holds")
			}
			return nil, nil
		}
		d := &delivery{msg: msg, host: strings.TrimPrefix(msg.Subject(), queue.SubmitSubject), epoch: ep,
			key: msg.Headers().Get("Nats-Msg-Id")}
		if meta, err := msg.Metadata(); err == nil {
			d.id, d.stored = submissionID(meta.Sequence.Stream, meta.Timestamp), meta.Timestamp
			d.counted = meta.NumDelivered > 1 || meta.Sequence.Stream <= ep.through || s.taken.Has(d.id)
			d.beforeConsumer = !d.counted && meta.Timestamp.Before(created)
			if d.key == "" {
				// Without a Nats-Msg-Id, the stored message itself is the
				// key, so that a redelivery cannot create a second order.
				d.key = fmt.Sprintf("nats-submit/%d/%d", meta.Sequence.Stream, meta.Timestamp.UnixNano())
			}
		}
		ln.add(d.host, d)
	}
}

// consumerClockSkew widens delivery.beforeConsumer past the intake
// consumer's creation, for a cluster whose stream and consumer leaders'
// clocks differ: a message stored just after it only costs a lookup.
const consumerClockSkew = 2 * time.Second

// submissionID is the order id of the submission stored in ORDERLY_SUBMIT
// as sequence seq at ts: a UUIDv7 of ts (its milliseconds, and their
// fraction in rand_a, so that ids still sort by submission time) whose
// random bits are a hash of seq and ts. Every replica that takes the
// message up computes the same id, so one that takes it over after a
// failover, or a retry after an insert of unknown outcome, finds the
// order recorded for it by its id (intakeOne), without the principal its
// idempotency key belongs to, which a revoked token no longer names.
func submissionID(seq uint64, ts time.Time) uuid.UUID {
	var b [28]byte
	copy(b[:], "orderly-nats-submit\x00")
	binary.BigEndian.PutUint64(b[20:], seq)
	h := sha256.Sum256(binary.BigEndian.AppendUint64(b[:], uint64(ts.UnixNano())))
	id := order.IDAt(ts.UnixMilli())
	frac := uint64(ts.Nanosecond()%1e6) * 4096 / 1e6 // 12 bits of the millisecond
	id[6] = 0x70 | byte(frac>>8)
	id[7] = byte(frac)
	copy(id[8:], h[:8])
	id[8] = 0x80 | id[8]&0x3f
	return id
}

// pinOf is the pin the server delivered msg under: the last Nats-Pin-Id.
// The server appends its own to the headers the publisher stored, and a
// publisher may store one too. Read first, a forged one made every
// delivery look like a new pin: the intake rewound to it and received it
// first again, for good (dispatchIntake refuses such a submission).
func pinOf(msg jetstream.Msg) string {
	v := msg.Headers().Values("Nats-Pin-Id")
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// keepInProgress tells the server every IntakeAckWait/3 that the
// submissions the lanes hold are being worked on, so that the short ack
// wait redelivers only what a dead replica held.
func keepInProgress(ctx context.Context, ln *lanes) {
	t := time.NewTicker(queue.IntakeAckWait / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, d := range ln.holding() {
				_ = d.msg.InProgress()
			}
		}
	}
}

// intakeLane takes up one submission, retrying in place while the failure
// is not the publisher's, until it is answered or its epoch is over.
func (s *Server) intakeLane(ctx context.Context, current func() bool, d *delivery) {
	wait := intakeRetryFirst
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil || !current() {
			return // unacknowledged: delivered again after the next rewind
		}
		// A retry always confirms the pin: the failure may be this
		// replica's own connection.
		pinned, err := d.epoch.pinned(ctx, s.Queue, attempt > 0)
		if err == nil && !pinned {
			return
		}
		if err == nil && s.intakeOne(ctx, d) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, intakeRetryMax)
	}
}

// intakeOne runs one submission through the REST path. It returns false
// when it could not be taken up for a reason that is not the publisher's;
// the caller retries it.
func (s *Server) intakeOne(ctx context.Context, d *delivery) bool {
	// An attempt started is finished even when the API shuts down.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), intakeAttemptLimit)
	defer cancel()
	msg := d.msg
	hdr := msg.Headers()
	reply := hdr.Get("Orderly-Reply")
	if !validReply(reply) {
		// The answer is published with the API's own rights: a subject of
		// the publisher's choosing could write into the KV bucket or the
		// streams. Only reply inboxes are answered; the submission itself
		// goes on.
		if reply != "" {
			s.logger.Warn("NATS submission: Orderly-Reply is not a subject under _INBOX. or orderly.reply.; it gets no answer",
				"reply", strconv.Quote(reply[:min(len(reply), 256)]), "subject", msg.Subject())
		}
		reply = ""
	}
	// answer publishes a on reply with the submission's Nats-Msg-Id as
	// it was sent, so that a publisher with many submissions in flight
	// matches each answer to its own, with replayedHeader when the
	// order is one an earlier submission with that id recorded, and
	// signed with the submission's Authorization (SignatureHeader), so
	// that the publisher can tell it from what a worker's seed sends
	// there.
	answer := func(a IntakeAnswer, replayed bool) {
		if reply == "" {
			return
		}
		h := nats.Header{}
		for _, id := range hdr.Values("Nats-Msg-Id") {
			h.Add("Nats-Msg-Id", id)
		}
		if replayed {
			h.Set(replayedHeader, "true")
		}
		key := hdr.Get("Authorization")
		if key != "" {
			// Its size counts against the payload below; the value is
			// set once the body is final.
			h.Set(SignatureHeader, strings.Repeat("0", 2*sha256.Size))
		}
		b, err := marshalAnswer(a)
		if max := s.Queue.Conn().MaxPayload() - headerBytes(h); err == nil && max > 0 && int64(len(b)) > max && a.Order != nil {
			// A finished order answered again (a retry, a redelivery) with
			// outputs larger than a NATS message: published whole, the
			// answer was refused and the publisher heard nothing. The
			// order goes without its result, which REST and SQL have.
			o := *a.Order
			o.Result = nil
			b, err = marshalAnswer(IntakeAnswer{Order: &o})
		}
		if err == nil {
			if key != "" {
				h.Set(SignatureHeader, answerSignature(key, reply, h, b))
			}
			err = s.Queue.Conn().PublishMsg(&nats.Msg{Subject: reply, Data: b, Header: h})
		}
		if err != nil {
			s.logger.Warn("NATS submission: its answer could not be published", "subject", msg.Subject(),
				"reply", reply, "error", err)
		}
	}
	fromRecord := func() bool {
		// Accepted by an earlier attempt: the checks are not run again.
		// Run again, a reload since (a revoked token, a new policy or
		// limit) refused a submission whose order was recorded, and the
		// reconciler queued it later, behind the host's next submissions.
		stored, err := s.Intake.Requeue(ctx, d.recorded)
		if err != nil {
			s.logger.Warn("nats intake: order recorded but not queued; retrying", "order_id", d.recorded.ID, "error", err)
			return false
		}
		resp := s.withCancellation(ctx, stored)
		answer(IntakeAnswer{Order: &resp}, false)
		_ = msg.Ack()
		return true
	}
	if d.recorded == nil && (d.counted || d.beforeConsumer) && d.id != uuid.Nil {
		// Taken up before: by a replica that died after recording its
		// order, or by an earlier attempt of this lane whose insert may
		// have committed (a connection lost at the commit); or perhaps,
		// under an intake consumer since lost (beforeConsumer). A recorded
		// submission is answered from its record, before any check:
		// checked again, a reload in between (a revoked token, a new
		// policy or limit) refused it while its order ran anyway, queued
		// by the reconciler behind the host's next submissions. A refusal
		// recorded by a replica that stopped before acknowledging it is
		// withdrawn first (Retake): this take-up's decision is the one.
		if err := s.Intake.Retake(ctx, d.id, d.stored); err != nil {
			s.logger.Warn("nats intake: cannot withdraw the refusal of a submission taken up before; retrying",
				"subject", msg.Subject(), "order_id", d.id, "error", err)
			return false
		}
		if !s.findRecorded(ctx, d) {
			return false
		}
	}
	if d.recorded != nil {
		return fromRecord()
	}
	var principal string
	var redacted map[string]any
	refuse := func(err error) bool {
		var e *order.Error
		if !errors.As(err, &e) || e.Code == order.CodeUnavailable || e.Code == order.CodeInternal {
			// Not the publisher's fault: the lane tries again.
			s.logger.Warn("nats intake; retrying", "subject", msg.Subject(), "error", err)
			return false
		}
		if d.recorded == nil && d.id != uuid.Nil {
			// The stored message's order may be recorded all the same:
			// by another replica while this one checked it (one stalled
			// past a takeover; with a token remapped between them, this
			// insert met its id and said "conflict"), or by one whose
			// take-up this replica cannot tell from a first delivery (the
			// intake consumer deleted and made again, as an upgrade
			// does, delivers it as new), checked again after a reload.
			// The record wins, as a takeover's lookup decides: refused,
			// the publisher heard a refusal of an order that runs. (A
			// new stored message with the same Nats-Msg-Id has an id of
			// its own: its principal's key finds the order instead,
			// intake.Service.Recorded, when a check refuses it.)
			if !s.findRecorded(ctx, d) {
				return false
			}
			if d.recorded != nil {
				return fromRecord()
			}
		}
		if redacted == nil {
			redacted = map[string]any{"subject": msg.Subject()}
		}
		if id := hdr.Get("Nats-Msg-Id"); id != "" {
			// The publisher's own name for the submission: how it finds
			// the refusal (the order id it would have had is its stored
			// message's, which it does not know).
			redacted["nats_msg_id"] = id
		}
		// Recorded within an allowance (recordNATSRefusal): a flood of
		// bad tokens, which name no address, must not fill the audit.
		settle := func(give bool) {
			if give {
				s.Intake.Unrecorded(string(e.Code))
			}
		}
		if s.recordNATSRefusal(principal) {
			settle = s.Intake.RejectTentatively(ctx, postgres.Rejection{Principal: principal, Source: "nats", Method: "PUBLISH",
				Path: msg.Subject(), Status: statusOf(e.Code), Code: string(e.Code), Reason: e.Message, Request: redacted,
				Submission: d.id})
			s.taken.Add(d.id) // its row, withdrawn if it comes again (Retake)
		}
		if d.epoch.pin != "" {
			// This replica lost its pin while it refused (frozen, or held
			// up by the audit): the replica pinned now takes the
			// submission up again and answers it, perhaps otherwise (its
			// rate limit is its own). Answered here too, the publisher
			// heard both its order and a refusal; and the audit's row is
			// withdrawn, or it said refused what the other replica
			// accepted. (A forged Nats-Pin-Id is refused under no pin
			// too: dispatchIntake.)
			if pinned, err := d.epoch.pinned(ctx, s.Queue, false); err == nil && !pinned {
				settle(false)
				return false
			}
		}
		settle(true)
		answer(IntakeAnswer{Error: &ErrorDetail{Code: e.Code, Message: e.Message, Details: e.Details}}, false)
		_ = msg.Ack()
		return true
	}
	if hdr == nil {
		// Not "missing Authorization header": it may be there, on a
		// line nats.go could not read past (dispatchIntake).
		return refuse(order.Errorf(order.CodeInvalid, "the submission's headers cannot be read (%v): each header line must be Name: value", nats.ErrBadHeaderMsg))
	}
	if err := miscasedHeader(hdr); err != nil {
		if reply == "" {
			reply = miscasedReply(hdr) // the refusal goes where the publisher listens
		}
		return refuse(err)
	}
	if len(hdr.Values("Nats-Pin-Id")) > 1 {
		// The server's header, also sent by the publisher (dispatchIntake).
		return refuse(order.FieldError(order.CodeInvalid, "Nats-Pin-Id", "Nats-Pin-Id is the NATS server's header; a submission may not set it"))
	}
	if err := oneAuthorization(hdr.Values("Authorization")); err != nil {
		return refuse(err)
	}
	p, err := s.Auth().Authenticate(hdr.Get("Authorization"))
	if err != nil {
		return refuse(err)
	}
	principal = p.Name
	if !d.counted {
		if err := s.spendPrincipal(ctx, p.Name); err != nil {
			return refuse(err)
		}
		d.counted = true
		s.taken.Add(d.id)
	}
	if int64(len(msg.Data())) > s.Settings().MaxBodyBytes {
		return refuse(order.Errorf(order.CodeTooLarge, "submission is larger than %d bytes", s.Settings().MaxBodyBytes))
	}
	var req SubmitRequest
	if err := decodeBytes(msg.Data(), &req); err != nil {
		return refuse(err)
	}
	redacted = redact(&req)
	if len(req.Hosts) > 0 {
		return refuse(order.FieldError(order.CodeInvalid, "hosts", "a NATS submission runs on the host of its subject orderly.submit.<host>: hosts (a fan-out) is for POST /v1/orders"))
	}
	if req.Host == "" {
		req.Host = d.host
		redacted["host"] = d.host
	}
	if req.Host != d.host {
		if err := order.CheckHost(req.Host); err != nil {
			return refuse(err) // not a host id: not repeated
		}
		return refuse(order.FieldError(order.CodeInvalid, "host",
			"the body's host %s is not %s, the host of the subject orderly.submit.%s it was published to: leave host out, or publish to orderly.submit.%s",
			req.Host, d.host, d.host, req.Host))
	}
	if n := len(hdr.Values("Nats-Msg-Id")); n > 1 {
		// As two Idempotency-Key headers (idempotencyKeyOf): the stream
		// deduplicates on the first, and nobody can say which was meant.
		return refuse(order.FieldError(order.CodeInvalid, "Nats-Msg-Id", "%d Nats-Msg-Id headers: send one", n))
	}
	if v := hdr.Values("Nats-Msg-Id"); len(v) == 1 && v[0] == "" {
		// As an empty Idempotency-Key (idempotencyKeyOf): a publisher
		// that meant a key would have its retry run again.
		return refuse(order.FieldError(order.CodeInvalid, "Nats-Msg-Id", "Nats-Msg-Id is empty: send an id, or leave the header out"))
	}
	if len(d.key) > 200 || order.HasControl(d.key, false) {
		// The REST header's rule (idempotencyKeyOf), in the header's own
		// name: the domain's check would name Idempotency-Key and its own
		// limit, which this publisher never sent.
		return refuse(order.FieldError(order.CodeInvalid, "Nats-Msg-Id", "Nats-Msg-Id must be printable text of at most 200 bytes"))
	}
	correlation, err := correlationOf(hdr.Values(correlationHeader))
	if err != nil {
		return refuse(err)
	}
	o, err := req.toOrder()
	if err != nil {
		return refuse(err)
	}
	o.Source = "nats"
	o.IdempotencyKey = d.key
	correlate(o, correlation) // as REST's (handleSubmit)
	if d.id != uuid.Nil {
		o.ID = d.id
	}
	stored, err := s.Intake.Submit(ctx, p, o)
	var np *intake.ErrNotPublished
	if errors.As(err, &np) {
		// Recorded but not in the host's stream: answering now would let
		// the host's next submission be published first. The retry
		// publishes the order again (d.recorded); after a failover, the
		// next replica finds it by its key.
		s.logger.Warn("nats intake: order recorded but not queued; retrying", "order_id", np.ID, "error", np.Err)
		if stored != nil {
			d.recorded = stored
		}
		return false
	}
	if err != nil {
		return refuse(err)
	}
	// The order as GET /v1/orders/{id} shows it: a retry of one that was
	// canceled says by whom, as REST's retry does.
	resp := s.withCancellation(ctx, stored)
	answer(IntakeAnswer{Order: &resp}, stored.ID != o.ID)
	_ = msg.Ack()
	return true
}

// findRecorded looks up the order of d's stored message (its id is the
// message's own, so the record is this submission's, whoever it names as
// principal) and sets d.recorded when there is one. It returns false when
// PostgreSQL could not say: the caller retries.
func (s *Server) findRecorded(ctx context.Context, d *delivery) bool {
	prev, err := s.Store.GetOrder(ctx, d.id)
	switch {
	case err == nil && prev.Source == "nats" && prev.Host == d.host && prev.IdempotencyKey == d.key:
		d.recorded = prev
	case err != nil && order.ErrorCode(err) != order.CodeNotFound:
		s.logger.Warn("nats intake: cannot look up a submission taken up before; retrying", "subject", d.msg.Subject(),
			"order_id", d.id, "error", err)
		return false
	}
	return true
}

// headerBytes is the size of h on the wire ("NATS/1.0", then a line per
// value, then an empty line), which counts towards a message's payload.
func headerBytes(h nats.Header) int64 {
	n := int64(len("NATS/1.0\r\n\r\n"))
	for k, vs := range h {
		for _, v := range vs {
			n += int64(len(k) + len(": \r\n") + len(v))
		}
	}
	return n
}

// marshalAnswer writes a as REST's encode does, without escaping <, > and
// &: json.Marshal writes each as six bytes, so an order whose arguments
// are full of them (a shell script's redirections) made an answer several
// times its submission, past what a NATS message may carry, and the
// accepted submission went unanswered.
func marshalAnswer(a IntakeAnswer) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(a); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// ReplyPrefixes are the subject prefixes an Orderly-Reply may use: the
// conventional NATS inbox and orderly's own reply space.
var replyPrefixes = []string{"_INBOX.", "orderly.reply."}

// intakeHeaders are the headers a NATS submission is read by, spelled as
// they must be: NATS header names are case-sensitive, for the server's
// deduplication too.
var intakeHeaders = []string{"Authorization", "Orderly-Reply", "Nats-Msg-Id", correlationHeader}

// miscasedHeader refuses a submission with a header that is one of
// intakeHeaders in another case, or a REST habit: unread, a nats-msg-id
// left the publisher's retries unrecognized (each ran again), an
// orderly-reply left it without an answer, and an Idempotency-Key did
// nothing. Of several, it names the first in sorted order, so the same
// submission is refused the same way each time (a map has no order).
func miscasedHeader(hdr nats.Header) error {
	first, want := "", ""
	for name := range hdr {
		if first != "" && name >= first {
			continue
		}
		if strings.EqualFold(name, "Idempotency-Key") {
			first, want = name, ""
			continue
		}
		for _, w := range intakeHeaders {
			if name != w && strings.EqualFold(name, w) {
				first, want = name, w
			}
		}
	}
	switch {
	case first == "":
		return nil
	case want == "":
		return order.FieldError(order.CodeInvalid, first, "a NATS submission's idempotency key is its Nats-Msg-Id header, not %s", first)
	}
	return order.FieldError(order.CodeInvalid, first, "header %s is not read: NATS header names are case-sensitive; send %s", first, want)
}

// miscasedReply is the reply subject of a refused submission that named
// it in a header Orderly-Reply in another case, whichever header the
// refusal names: the first valid one in sorted order, or "".
func miscasedReply(hdr nats.Header) string {
	first := ""
	for name, v := range hdr {
		if name != "Orderly-Reply" && strings.EqualFold(name, "Orderly-Reply") && len(v) > 0 && validReply(v[0]) &&
			(first == "" || name < first) {
			first = name
		}
	}
	if first == "" {
		return ""
	}
	return hdr[first][0]
}

// validReply accepts a concrete subject under a reply prefix: no
// wildcards, no empty tokens, no spaces or control bytes.
func validReply(s string) bool {
	if len(s) == 0 || len(s) > 256 {
		return false
	}
	ok := false
	for _, p := range replyPrefixes {
		if strings.HasPrefix(s, p) && len(s) > len(p) {
			ok = true
		}
	}
	if !ok {
		return false
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" || tok == "*" || tok == ">" {
			return false
		}
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f || c == '*' || c == '>' {
			return false
		}
	}
	return true
}
