package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// UnservedHosts returns the hosts that have messages in the orders stream
// and no live worker (no recent heartbeat), with how many messages each
// has: a host nobody serves, never or no more (a typo, a retired machine),
// keeps its messages for good, since only a worker's ack removes one from
// a work queue (and, on a limits stream, only PurgeAcked up to the ack
// floor of a consumer that still exists).
func (q *Queue) UnservedHosts(ctx context.Context) (map[string]uint64, error) {
	st, err := q.js.Stream(ctx, OrdersStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", OrdersStream, err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(OrdersSubject+">"))
	if err != nil {
		return nil, fmt.Errorf("subjects of stream %s: %w", OrdersStream, err)
	}
	if len(info.State.Subjects) == 0 {
		return nil, nil
	}
	online, err := q.OnlineHosts(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for subject, n := range info.State.Subjects {
		host := strings.TrimPrefix(subject, OrdersSubject)
		if _, ok := online[host]; !ok {
			out[host] = n
		}
	}
	return out, nil
}

// DropEnded removes the messages of host's subject whose orders have
// ended, reading at most scan of them from the front: ended reports which
// of the ids it is given belong to orders that can never run (terminal, or
// gone from PostgreSQL). The run of them at the front goes in one purge;
// those behind an order that may still run are deleted one by one, so an
// order stuck queued there does not keep every later one on disk. The
// messages of orders that may run stay, in their order. It returns how
// many it removed.
func (q *Queue) DropEnded(ctx context.Context, host string, scan int, ended func(context.Context, []uuid.UUID) (map[uuid.UUID]bool, error)) (int, error) {
	st, err := q.js.Stream(ctx, OrdersStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", OrdersStream, err)
	}
	subject := OrdersSubject + host
	var ids []uuid.UUID
	var seqs []uint64
	err = eachOrderMessage(ctx, st, host, func(seq uint64, id uuid.UUID) bool {
		ids, seqs = append(ids, id), append(seqs, seq) // uuid.Nil, not an order: nothing to keep it for
		return len(ids) < scan
	})
	if err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, nil
	}
	gone, err := ended(ctx, ids)
	if err != nil {
		return 0, err
	}
	drop := func(i int) bool { return ids[i] == uuid.Nil || gone[ids[i]] }
	front := 0
	for front < len(ids) && drop(front) {
		front++
	}
	if front > 0 {
		if err := st.Purge(ctx, jetstream.WithPurgeSubject(subject), jetstream.WithPurgeSequence(seqs[front-1]+1)); err != nil {
			return 0, fmt.Errorf("drop ended orders of host %s: %w", host, err)
		}
	}
	dropped := front
	for i := front; i < len(ids); i++ {
		if !drop(i) {
			continue
		}
		if err := st.DeleteMsg(ctx, seqs[i]); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return dropped, fmt.Errorf("drop ended order %s of host %s: %w", ids[i], host, err)
		}
		dropped++
	}
	return dropped, nil
}
