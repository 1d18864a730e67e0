package queue

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// MendEvery is how often Mend looks at orderly's streams and buckets while
// the connection stays up: an operator's `nats stream rm`, `nats kv rm` or
// `nats stream edit` reconnects nobody.
const MendEvery = 5 * time.Second

// HandsHint is where an operator reads what orderly does after a stream,
// a bucket or their settings were changed by hand.
const HandsHint = "docs/deploy.md, Changing JetStream state by hand"

// madeStreams are the streams ensure makes, with what is lost with each
// when it is deleted, as Mend's log line says it.
var madeStreams = []struct{ name, lost string }{
	{OrdersStream, "the messages of the orders queued then: those orders never run, and end canceled once the API finds their messages gone (within about two minutes); resubmit those that must run"},
	{SubmitStream, "the NATS submissions the API's intake had not taken yet, never answered; NATS publishes to orderly.submit.* were refused until now"},
	{LiveStream, "the live output of the orders running then (their workers publish what they keep of it again); PostgreSQL gets each order's whole output"},
	{"KV_" + HostsBucket, "the workers' leases and heartbeats: each worker takes its host again at its next renewal"},
	{"KV_" + MarksBucket, "the publish generation and the hosts' claim marks: the restore guard (docs/deploy.md, Backup and restore) knows less until they are written again"},
}

// Mend makes orderly's streams and buckets again when one is gone, and
// sets the orders and submissions streams' limits back when they were
// changed by hand, on a queue that may create streams (the API's,
// serve's; a worker's may not), and counts what it made or set back. It
// looks every MendEvery, and at once after the connection reconnected
// (nats.go's reconnect count, read from memory, or a restart that
// FollowRestarts counts): a NATS restart loses the live memory stream on
// a single server, and a worker's chunks went into no stream until the
// stream was made again. Otherwise gone until a restart of the API were:
// the submissions stream after `nats stream rm ORDERLY_SUBMIT` (every
// NATS submission refused), the hosts bucket after `nats kv rm
// orderly_hosts` (every worker's lease renewal failing, every host shown
// offline), the live stream after `nats stream rm ORDERLY_LIVE` (chunks
// into no stream); and a `nats stream edit ORDERLY_ORDERS --max-age`, or
// any limit, dropped queued orders for as long as the API ran; and the
// live stream's rollups turned on again (by an older API's start) let any
// worker's seed purge every host's live output until the next start.
// Cost: five
// STREAM.INFO requests every MendEvery per API replica. A request that
// fails (JetStream not ready after a reconnect) is asked again at the
// next call. Limits JetStream will not let it set back for want of
// storage are left to ApplyDeferredSettings, and said once
// (keptByHand).
func (q *Queue) Mend(ctx context.Context) (int, error) {
	if !q.creator {
		return 0, nil
	}
	// Both only grow: their sum changes when either does.
	reconnects := q.nc.Stats().Reconnects
	if restarts := q.restarts.Load(); restarts != nil {
		reconnects += (*restarts)()
	}
	now := time.Now().UnixNano()
	reconnected := reconnects != q.liveFound.Load()
	if !reconnected && now-q.mendedAt.Load() < int64(MendEvery) {
		return 0, nil
	}
	var gone []string
	changed := map[string][]string{}
	for _, s := range madeStreams {
		st, err := q.js.Stream(ctx, s.name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			gone = append(gone, s.name)
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("stream %s: %w", s.name, err)
		}
		if c := handChanged(st.CachedInfo().Config); len(c) > 0 {
			changed[s.name] = c
		}
	}
	short := len(gone) == 0 && len(changed) > 0 && q.deferred.Load()
	if short {
		// JetStream refuses orderly's settings for want of storage
		// (ensureStream): an update now is refused too, and said "set
		// back" while the hand-made limits stayed, with a WARN of each
		// refusal, every MendEvery. ApplyDeferredSettings sets them
		// once it has room; said once. Not the live stream's rollups:
		// it is kept in memory, which want of file storage refuses no
		// update of (an older API's start turned them on just so), and
		// with them any worker's seed purges every host's live output.
		kept := maps.Clone(changed)
		delete(kept, LiveStream)
		if len(kept) > 0 {
			q.keptByHand(kept)
		}
		live := changed[LiveStream]
		if len(live) == 0 {
			q.liveFound.Store(reconnects)
			q.mendedAt.Store(now)
			return 0, nil
		}
		changed = map[string][]string{LiveStream: live}
		if _, err := q.putLiveStream(ctx); err != nil {
			return 0, fmt.Errorf("stream %s: %w", LiveStream, replicasError(err, q.opts.Replicas))
		}
	} else {
		q.mendKept.Store("")
	}
	switch {
	case short:
		// The live stream's rollups alone, set back above.
	case len(changed) == 0 && slices.Equal(gone, []string{LiveStream}):
		// The live stream alone, as a NATS restart loses it: the
		// request that made it before Mend looked at the others.
		if _, err := q.putLiveStream(ctx); err != nil {
			return 0, fmt.Errorf("stream %s: %w", LiveStream, replicasError(err, q.opts.Replicas))
		}
	case len(gone) > 0 || len(changed) > 0:
		if slices.Contains(gone, "KV_"+MarksBucket) {
			// ensure makes the bucket only when no handle is open.
			q.forgetMarksKV(jetstream.ErrStreamNotFound)
		}
		if _, err := q.ensure(ctx); err != nil {
			return 0, fmt.Errorf("make the streams again (%s gone): %w", strings.Join(gone, ", "), replicasError(err, q.opts.Replicas))
		}
		if q.deferred.Load() && len(changed) > 0 {
			// Refused for want of storage just now: not set back.
			kept := map[string][]string{}
			for name := range changed {
				if st, err := q.js.Stream(ctx, name); err != nil || len(handChanged(st.CachedInfo().Config)) > 0 {
					kept[name] = changed[name]
					delete(changed, name)
				}
			}
			if len(kept) > 0 {
				q.keptByHand(kept)
			}
		}
	}
	for _, s := range madeStreams {
		switch {
		case !slices.Contains(gone, s.name):
		case reconnected && s.name == LiveStream:
			// A memory stream: a restart of a single nats-server
			// loses it, nobody's mistake.
			q.logger().Info("the live output stream was gone after a NATS restart: made it again", "stream", s.name)
		default:
			q.logger().Error("a JetStream stream of orderly was gone (deleted by hand: nats stream rm, nats kv rm? or the NATS store lost): made it again; what it held is lost",
				"stream", s.name, "lost", s.lost, "hint", HandsHint)
		}
		if c := changed[s.name]; len(c) > 0 && s.name == LiveStream && !strings.HasPrefix(c[0], "allow_rollup_hdrs") {
			q.logger().Warn("the live output stream took orderly.events.> again, as an orderly api or serve from before 2026-12-06 (night) makes it at its start (a rolling upgrade?), or by hand: set its subjects back; meanwhile it kept the ends told to the API's freeing of live output (orderly.events.<host>.<id>.free) for a minute each",
				"stream", s.name, "changed", strings.Join(c, ", "), "hint", HandsHint)
		} else if len(c) > 0 && s.name == LiveStream {
			q.logger().Warn("the live output stream took rollups again, as an orderly api or serve from before 2026-12-06 makes it at its start (a rolling upgrade?), or by hand: turned them off; any worker's NATS credential could purge every host's live output with them",
				"stream", s.name, "changed", strings.Join(c, ", "), "hint", HandsHint)
		} else if len(c) > 0 {
			q.logger().Warn("a JetStream stream's limits were changed by hand (nats stream edit?): set back to orderly's, under which no accepted order is dropped; orderly sets them at every start too",
				"stream", s.name, "changed", strings.Join(c, ", "), "hint", HandsHint)
		}
	}
	q.liveFound.Store(reconnects)
	q.mendedAt.Store(now)
	return len(gone) + len(changed), nil
}

// keptByHand says, once for each set of them, that the hand-made limits
// changed (by stream) stay until JetStream has room for orderly's.
func (q *Queue) keptByHand(changed map[string][]string) {
	var all []string
	for _, s := range madeStreams {
		if c := changed[s.name]; len(c) > 0 {
			all = append(all, s.name+": "+strings.Join(c, ", "))
		}
	}
	kept := strings.Join(all, "; ")
	if prev, _ := q.mendKept.Swap(kept).(string); prev == kept {
		return
	}
	q.logger().Warn("a JetStream stream's limits were changed by hand (nats stream edit?), and JetStream has no room to reserve for orderly's: they stay until it has, when the API sets orderly's",
		"changed", kept, "retry_every", DeferredEvery.String(), "hint", HandsHint)
}

// handChanged names the limits of cfg, the settings of one of madeStreams
// as they are, that orderly does not set and that lose orders: on the
// orders stream any limit (what passes one is removed, queued orders
// among it), on the submissions stream an age or a cap on its messages
// in all (submissions not yet taken removed, or every host's refused).
// The submissions stream's own caps are orderly's
// (DefaultSubmitBacklog, SubmitMaxBytes, or smaller when JetStream could
// not reserve them: ensureStream), and so are the buckets' and the live
// stream's: not looked at. On the live stream, rollups allowed.
func handChanged(cfg jetstream.StreamConfig) []string {
	var c []string
	switch cfg.Name {
	case OrdersStream:
		if cfg.MaxAge > 0 {
			c = append(c, "max_age "+cfg.MaxAge.String())
		}
		if cfg.MaxBytes > 0 {
			c = append(c, fmt.Sprintf("max_bytes %d", cfg.MaxBytes))
		}
		if cfg.MaxMsgs > 0 {
			c = append(c, fmt.Sprintf("max_msgs %d", cfg.MaxMsgs))
		}
		if cfg.MaxMsgsPerSubject > 0 {
			c = append(c, fmt.Sprintf("max_msgs_per_subject %d", cfg.MaxMsgsPerSubject))
		}
	case SubmitStream:
		if cfg.MaxAge > 0 {
			c = append(c, "max_age "+cfg.MaxAge.String())
		}
		if cfg.MaxMsgs > 0 {
			c = append(c, fmt.Sprintf("max_msgs %d", cfg.MaxMsgs))
		}
	case LiveStream:
		// Not a limit, but what lets any worker's seed purge every
		// host's live output (liveConfig): turned on again by an API or
		// serve from before 2026-12-06 started during a rolling upgrade
		// (it updates the stream to its own settings), or by hand.
		if cfg.AllowRollup {
			c = append(c, "allow_rollup_hdrs true")
		}
		// An older API's start puts orderly.events.> back: the stream
		// then stores each end told to the API's freeing (FreeSubjectOf)
		// for the finished event's TTL, for nobody.
		if !slices.Equal(cfg.Subjects, liveSubjects) {
			c = append(c, "subjects "+strings.Join(cfg.Subjects, ", "))
		}
	}
	return c
}
