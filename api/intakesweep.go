package api

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
)

// A NATS submission with an empty body and a Status header is, to
// nats.go's JetStream client, a status message of the server's (404 no
// messages, 408 timeout, 409 consumer deleted…), whatever subject it was
// stored under: the intake's iterator never hands it over, so it was never
// answered nor acknowledged and came again every IntakeAckWait, for good.
// One with status 409 and the description "Consumer Deleted" ended the
// iterator at each delivery, and the intake took nothing else; 256 of any
// status held every slot of the consumer's MaxAckPending. Anyone holding
// the submitter's credential, with a token or not, stopped every NATS
// submission. The sweep finds such submissions where nats.go cannot hide
// them: at the head of ORDERLY_SUBMIT, which holds only unacknowledged
// submissions, oldest first.
const (
	// intakeSweepEvery: how often each replica looks at the head, and so
	// about how long such a submission can hold the intake up.
	intakeSweepEvery = queue.IntakeAckWait / 3
	// intakeSweepMax bounds what one sweep refuses before it waits again.
	intakeSweepMax = 1000
)

// sweepIntake refuses, every intakeSweepEvery until ctx ends, the
// submissions at the head of ORDERLY_SUBMIT that nats.go takes for status
// messages (statusShaped).
func (s *Server) sweepIntake(ctx context.Context) {
	t := time.NewTicker(intakeSweepEvery)
	defer t.Stop()
	var receivable uint64 // the head last read: a submission the intake receives
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		receivable = s.sweepOnce(ctx, receivable)
	}
}

// sweepOnce refuses status-shaped submissions at the head of the stream
// until the head is one the intake receives, which it returns (not read
// again while it stays the head: a submission retried through a
// PostgreSQL outage may be up to a MiB).
func (s *Server) sweepOnce(ctx context.Context, receivable uint64) uint64 {
	for range intakeSweepMax {
		seq, err := s.Queue.OldestSubmission(ctx)
		if err != nil {
			// NATS unreachable: the intake says so (RunNATSIntake).
			s.logger.Debug("nats intake sweep: cannot read the submit stream", "error", err)
			return receivable
		}
		if seq == 0 || seq == receivable {
			return receivable
		}
		m, err := s.Queue.StoredSubmission(ctx, seq)
		switch {
		case err != nil:
			s.logger.Debug("nats intake sweep: cannot read the oldest submission", "seq", seq, "error", err)
			return receivable
		case m == nil:
			continue // acknowledged meanwhile
		case !statusShaped(m.Header, m.Data):
			return seq
		}
		// Dropped first, so that of several replicas sweeping, one
		// answers. A replica killed before its answer leaves the
		// submission unanswered and unrecorded, as a publish lost on
		// the way to the server would be.
		mine, err := s.Queue.DropSubmission(ctx, seq)
		if err != nil {
			s.logger.Warn("nats intake sweep: cannot drop a submission the intake cannot receive", "seq", seq, "error", err)
			return receivable
		}
		if mine {
			s.refuseSwept(ctx, m)
		}
	}
	return receivable
}

// statusShaped reports whether nats.go's JetStream client takes a
// delivery with these headers and body for a status message of the
// server's rather than a message of the stream (jetstream.checkMsg): an
// empty body and a Status header. It never hands such a delivery over.
func statusShaped(h nats.Header, data []byte) bool {
	return len(data) == 0 && h.Get("Status") != ""
}

// refuseSwept runs a dropped submission through the intake's own checks
// (intakeOne), which refuse it as they refuse any empty body, on its
// Orderly-Reply and in rejections; it retries while PostgreSQL cannot
// record the refusal, until ctx ends.
func (s *Server) refuseSwept(ctx context.Context, m *jetstream.RawStreamMsg) {
	d := &delivery{msg: sweptMsg{m}, host: strings.TrimPrefix(m.Subject, queue.SubmitSubject),
		epoch: newEpoch("", 0), key: m.Header.Get("Nats-Msg-Id"),
		id: submissionID(m.Sequence, m.Time), stored: m.Time}
	if d.key == "" {
		d.key = fmt.Sprintf("nats-submit/%d/%d", m.Sequence, m.Time.UnixNano()) // as dispatchIntake's
	}
	s.logger.Warn("nats intake: a submission with an empty body and a Status header, which the NATS client takes for the server's status message, is refused from the stream",
		"subject", m.Subject, "seq", m.Sequence, "status", m.Header.Get("Status"))
	wait := intakeRetryFirst
	for !s.intakeOne(ctx, d) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, intakeRetryMax)
	}
}

// sweptMsg is a submission read from the stream rather than delivered:
// it has no delivery to acknowledge (sweepOnce dropped it from the stream
// already), so acknowledging it does nothing.
type sweptMsg struct{ m *jetstream.RawStreamMsg }

func (w sweptMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: w.m.Sequence},
		Timestamp: w.m.Time, Stream: queue.SubmitStream}, nil
}
func (w sweptMsg) Data() []byte                     { return w.m.Data }
func (w sweptMsg) Headers() nats.Header             { return w.m.Header }
func (w sweptMsg) Subject() string                  { return w.m.Subject }
func (w sweptMsg) Reply() string                    { return "" }
func (w sweptMsg) Ack() error                       { return nil }
func (w sweptMsg) DoubleAck(context.Context) error  { return nil }
func (w sweptMsg) Nak() error                       { return nil }
func (w sweptMsg) NakWithDelay(time.Duration) error { return nil }
func (w sweptMsg) InProgress() error                { return nil }
func (w sweptMsg) Term() error                      { return nil }
func (w sweptMsg) TermWithReason(string) error      { return nil }
