package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The intake consumer of ORDERLY_SUBMIT is shared by every API replica but
// pinned: the server delivers to one replica at a time (a NATS priority
// group with PriorityPolicyPinned) and pins another when that one stops
// pulling for IntakePinnedTTL. One receiver at a time is what keeps a
// host's submissions in stream order; see docs/decisions.md.
const (
	// IntakeConsumerName is the durable name of the intake consumer.
	IntakeConsumerName = "api_intake"
	// IntakeGroup is the priority group every replica pulls in.
	IntakeGroup = "intake"
	// IntakePinnedTTL is how long the pinned replica may go without a pull
	// request before the server pins another: the failover delay after a
	// replica dies.
	IntakePinnedTTL = 5 * time.Second
	// IntakePullExpiry is the life of one pull request, so the pinned
	// replica pulls at least this often, well inside IntakePinnedTTL.
	IntakePullExpiry = 2 * time.Second
	// IntakeAckWait is how long a submission held by a replica that died
	// stays with it. It is short because the server pins another replica
	// only when it has something to deliver: when the dead one held every
	// pending submission, their redelivery is what hands the intake over.
	// The pinned replica marks what it holds in progress every
	// IntakeAckWait/3, so a long queue or a retry is not redelivered.
	IntakeAckWait = 6 * time.Second
	// SubmitDedupWindow is the ORDERLY_SUBMIT duplicate window, the
	// smallest the server accepts. Deduplication of submissions is done by
	// PostgreSQL (the idempotency key), permanently; a JetStream duplicate
	// would be dropped before the intake sees it, and the publisher that
	// retried would never get its answer.
	SubmitDedupWindow = 100 * time.Millisecond
	// intakeMaxAckPending bounds what the pinned replica holds: the
	// submissions of every host in flight at once.
	intakeMaxAckPending = 256
)

// intakeConfig is the intake consumer as IntakeConsumer creates it.
//
// On a server that is not part of a cluster (memory) its state is kept in
// memory, as the host consumers' is (hostConsumerConfig): with sync always,
// nats-server otherwise rewrote it (an O_SYNC temporary file, a rename, a
// directory fsync) about once per NATS submission (docs/benchmarks.md,
// "nats-server's work per order, counted"). The state is a cache of the
// work-queue stream: an acknowledged submission leaves ORDERLY_SUBMIT, and
// a consumer lost with a restart is created again by the intake
// (intakeGone), which then receives every stored submission from the
// first, in stream order. One taken up before the restart comes as new but
// keeps its stored message's order id and its Nats-Msg-Id: the intake
// finds its order (Submit's idempotency key, findRecorded) and answers it
// from the record, once recorded never twice. The pin is lost with it and
// the next pull pins again. On a cluster the consumer stays on disk, as the
// host consumers do.
func intakeConfig(memory bool) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        IntakeConsumerName,
		Description:    "orders submitted over NATS, taken by one API replica at a time",
		FilterSubject:  SubmitSubject + ">",
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        IntakeAckWait,
		MaxAckPending:  intakeMaxAckPending,
		MaxDeliver:     -1,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{IntakeGroup},
		PinnedTTL:      IntakePinnedTTL,
		MemoryStorage:  memory,
	}
}

// IntakeConsumer returns the pinned intake consumer, creating it if needed.
// An intake consumer left by an older orderly (shared, not pinned, or its
// state on disk where intakeConfig keeps it in memory) is deleted and
// created again: nats-server changes neither a priority policy nor a
// storage in place, and a work-queue stream refuses a second consumer on
// the same subjects. Its unacknowledged submissions stay in the stream and
// go to the new consumer.
func (q *Queue) IntakeConsumer(ctx context.Context) (jetstream.Consumer, error) {
	cfg := intakeConfig(q.nc.ConnectedClusterName() == "")
	replaced := false
	old, err := q.js.Consumer(ctx, SubmitStream, cfg.Durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
	case err != nil:
		return nil, fmt.Errorf("look up intake consumer: %w", err)
	case old.CachedInfo().Config.PriorityPolicy != jetstream.PriorityPolicyPinned,
		old.CachedInfo().Config.MemoryStorage != cfg.MemoryStorage:
		err := q.js.DeleteConsumer(ctx, SubmitStream, cfg.Durable)
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("replace the intake consumer of an older orderly: %w", err)
		}
		replaced = true
	}
	for try := 1; ; try++ {
		c, err := q.js.CreateOrUpdateConsumer(ctx, SubmitStream, cfg)
		if err == nil {
			if replaced {
				// An older replica still running cannot take the new
				// consumer and only says nats-server's refusal; say here
				// what it means and what to do.
				q.logger().Warn("replaced the NATS intake consumer an older orderly made; API replicas of that version still running take no NATS submissions (they log \"nats intake interrupted\" each second) until they are upgraded, and this replica takes them",
					"consumer", cfg.Durable, "hint", "docs/deploy.md, Upgrading: upgrade every API replica")
			}
			return c, nil
		}
		// Right after the delete, the server may still be removing the
		// old consumer's files when it writes the new one's (seen: a
		// rename of o.dat.tmp failing): that passes in a moment.
		if !replaced || try == 5 || ctx.Err() != nil {
			return nil, fmt.Errorf("create intake consumer: %w", err)
		}
		time.Sleep(time.Duration(try) * 100 * time.Millisecond)
	}
}

// RewindIntake rewinds the intake consumer to its ack floor: every
// submission delivered but not acknowledged (held by a replica that died or
// lost its pin) is delivered again at once, in stream order, instead of
// one by one as each ack timer runs out. It returns the last stream
// sequence delivered before the rewind: a submission up to it may already
// have been taken by the previous receiver; and when the consumer was
// created, which may be after the caller's handle of it was (another
// replica made it again, after a restart lost it).
func (q *Queue) RewindIntake(ctx context.Context) (deliveredThrough uint64, created time.Time, err error) {
	info, err := q.js.Consumer(ctx, SubmitStream, IntakeConsumerName)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("read intake consumer before rewinding it: %w", err)
	}
	deliveredThrough, created = info.CachedInfo().Delivered.Stream, info.CachedInfo().Created
	if _, err := q.js.ResetConsumer(ctx, SubmitStream, IntakeConsumerName); err != nil {
		return 0, time.Time{}, fmt.Errorf("rewind intake consumer to its ack floor: %w", err)
	}
	return deliveredThrough, created, nil
}

// UnpinIntake makes the server forget the intake consumer's pinned client,
// so that it pins one at its next pull instead of after IntakePinnedTTL.
func (q *Queue) UnpinIntake(ctx context.Context) error {
	st, err := q.js.Stream(ctx, SubmitStream)
	if err == nil {
		err = st.UnpinConsumer(ctx, IntakeConsumerName, IntakeGroup)
	}
	if err != nil {
		return fmt.Errorf("unpin intake consumer: %w", err)
	}
	return nil
}

// IntakePinned reports whether pin is still the intake consumer's pinned
// client: a replica that stalled past IntakePinnedTTL must not go on with
// what it holds, since another replica has it again.
func (q *Queue) IntakePinned(ctx context.Context, pin string) (bool, error) {
	c, err := q.js.Consumer(ctx, SubmitStream, IntakeConsumerName)
	if err != nil {
		return false, fmt.Errorf("read intake consumer: %w", err)
	}
	for _, g := range c.CachedInfo().PriorityGroups {
		if g.Group == IntakeGroup {
			return pin != "" && g.PinnedClientID == pin, nil
		}
	}
	return false, nil
}

// OldestSubmission returns the stream sequence of the oldest submission
// ORDERLY_SUBMIT holds, 0 when it holds none. A work-queue stream keeps
// only what the intake has not acknowledged, so this is the submission
// every later one of its host waits behind.
func (q *Queue) OldestSubmission(ctx context.Context) (uint64, error) {
	st, err := q.js.Stream(ctx, SubmitStream)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", SubmitStream, err)
	}
	if s := st.CachedInfo().State; s.Msgs > 0 {
		return s.FirstSeq, nil
	}
	return 0, nil
}

// StoredSubmission reads submission seq as ORDERLY_SUBMIT stored it; nil
// when it is gone (acknowledged or dropped meanwhile).
func (q *Queue) StoredSubmission(ctx context.Context, seq uint64) (*jetstream.RawStreamMsg, error) {
	st, err := q.js.Stream(ctx, SubmitStream)
	if err == nil {
		var m *jetstream.RawStreamMsg
		if m, err = st.GetMsg(ctx, seq); err == nil {
			return m, nil
		}
	}
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	return nil, fmt.Errorf("read submission %d of %s: %w", seq, SubmitStream, err)
}

// DropSubmission deletes submission seq from ORDERLY_SUBMIT without
// a delivery to acknowledge it by. It reports whether this call deleted
// it: of several API replicas dropping the same one, one does.
func (q *Queue) DropSubmission(ctx context.Context, seq uint64) (bool, error) {
	st, err := q.js.Stream(ctx, SubmitStream)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", SubmitStream, err)
	}
	err = st.DeleteMsg(ctx, seq)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) && strings.Contains(err.Error(), "no message found"):
		// The server's answer names no code nats.go keeps (10057 is
		// any failed delete): only its text tells a message gone.
		return false, nil
	}
	return false, fmt.Errorf("drop submission %d of %s: %w", seq, SubmitStream, err)
}
