package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// jsErrStorageResources is JetStream's "insufficient storage resources
// available": the bytes its streams reserve (their MaxBytes) would pass
// the storage it allows.
const jsErrStorageResources jetstream.ErrorCode = 10047

// minSubmitBytes is the smallest cap ORDERLY_SUBMIT is created with when
// JetStream cannot reserve SubmitMaxBytes.
const minSubmitBytes = 16 << 20

// storageRefused reports whether JetStream refused a stream or bucket
// for want of storage to reserve.
func storageRefused(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrStorageResources
}

// storageHint says what to do when JetStream cannot reserve a stream's
// bytes at all.
const storageHint = "JetStream allows less file storage than orderly's streams reserve: nats-server allows 75% of the disk space free when it started, unless its jetstream max_file_store says otherwise; free space on the store's disk and restart nats-server (or serve), or set max_file_store on a separate nats-server"

// ensureStream creates the stream cfg or updates it to cfg. JetStream
// refuses both, even an update that changes nothing, once the bytes its
// streams reserve pass the file storage it allows, which nats-server
// derives from the space free on its disk when it starts: restarted after
// its disk had filled, with room for its streams but not for their
// reservations, it refused every `orderly api` and `serve` start though
// the streams were there and worked. A stream that exists is then used as
// it is (a warn line says so; the next start updates it); a new stream
// with a byte cap is created with half the largest cap, halving from
// cfg's, that JetStream will reserve (at least minSubmitBytes).
func (q *Queue) ensureStream(ctx context.Context, cfg jetstream.StreamConfig) error {
	_, err := q.js.CreateOrUpdateStream(ctx, cfg)
	if err == nil || !storageRefused(err) {
		return err
	}
	if _, serr := q.js.Stream(ctx, cfg.Name); serr == nil {
		q.deferred.Store(true)
		q.deferredLog()("JetStream refused to update a stream for want of storage to reserve; using the stream as it is", "stream", cfg.Name, "error", err, "hint", storageHint)
		return nil
	} else if !errors.Is(serr, jetstream.ErrStreamNotFound) {
		return err
	}
	want := cfg.MaxBytes
	for cfg.MaxBytes > minSubmitBytes {
		cfg.MaxBytes /= 2
		_, err = q.js.CreateStream(ctx, cfg)
		if storageRefused(err) {
			continue
		}
		if err != nil {
			return err
		}
		// Half of what fits, so that the other streams' reservations
		// and messages have room too.
		if cfg.MaxBytes/2 >= minSubmitBytes {
			cfg.MaxBytes /= 2
			if _, err := q.js.UpdateStream(ctx, cfg); err != nil {
				return err
			}
		}
		q.deferred.Store(true)
		q.logger().Warn("JetStream cannot reserve a stream's full size; created it smaller", "stream", cfg.Name, "max_bytes", cfg.MaxBytes, "wanted_bytes", want, "hint", storageHint)
		return nil
	}
	return fmt.Errorf("%w (%s)", err, storageHint)
}

// ensureBucket is ensureStream for the hosts bucket's stream cfg (one
// that exists is used as it is when JetStream refuses the update for want
// of storage), and returns the bucket. Its stream is read once more and
// kept, as a worker's Bind keeps it: the lease's waits and takes read
// what was read last (hostsRead); serve's worker shares this queue.
func (q *Queue) ensureBucket(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.KeyValue, error) {
	if err := q.ensureStream(ctx, cfg); err != nil {
		return nil, err
	}
	kv, err := q.js.KeyValue(ctx, HostsBucket)
	if err == nil {
		_, _ = q.readHosts(ctx) // unread, the first look reads it
	}
	return kv, err
}

// DeferredEvery is how often the API tries again the settings JetStream
// refused for want of storage (ApplyDeferredSettings).
const DeferredEvery = 5 * time.Minute

// ApplyDeferredSettings tries again to bring the streams and the hosts
// bucket to this queue's settings when JetStream refused that for want of
// storage to reserve (ensureStream), and reports how many it brought
// (the three streams and the bucket when it succeeds, 0 when nothing was
// deferred or JetStream still refuses). Those settings used to wait for
// the API's next start with room: a changed nats.dedup_window or
// nats.lease_ttl, or ORDERLY_SUBMIT's full cap after it was created
// smaller. The API's intake calls it every DeferredEvery; a refusal again
// logs at debug level, not a warning each time. Otherwise it turns the
// hosts bucket's rollups off again when an older API turned them back on
// (hostsRollupsOff).
func (q *Queue) ApplyDeferredSettings(ctx context.Context) (int, error) {
	if !q.creator {
		return 0, nil
	}
	if !q.deferred.Load() {
		return 0, q.hostsRollupsOff(ctx)
	}
	q.deferred.Store(false)
	q.retrying.Store(true)
	defer q.retrying.Store(false)
	if _, err := q.ensure(ctx); err != nil {
		q.deferred.Store(true)
		return 0, err
	}
	if q.deferred.Load() {
		return 0, nil
	}
	q.logger().Info("JetStream has room again: the streams and the hosts bucket have their settings")
	return 4, nil
}

// deferredLog is the logger's Warn, or its Debug while
// ApplyDeferredSettings tries again.
func (q *Queue) deferredLog() func(msg string, args ...any) {
	if q.retrying.Load() {
		return q.logger().Debug
	}
	return q.logger().Warn
}

// logger is Options.Logger, or one that discards.
func (q *Queue) logger() *slog.Logger {
	if q.opts.Logger != nil {
		return q.opts.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// hostsRollupsOff brings the hosts bucket back to hostsStream when it
// takes rollups: an API or serve from before 2026-12-05 (night), started
// during a rolling upgrade, updates the bucket to its own settings at its
// start, expiry markers and so rollups, and any worker's credential could
// purge every host's lease again. An API started since would set them
// right only at its next start.
func (q *Queue) hostsRollupsOff(ctx context.Context) error {
	st, err := q.js.Stream(ctx, "KV_"+HostsBucket)
	if err != nil || !st.CachedInfo().Config.AllowRollup {
		return nil // unreadable or gone: not this check's to say
	}
	if err := q.ensureStream(ctx, q.hostsStream(ctx)); err != nil {
		return fmt.Errorf("turn the rollups of kv bucket %s off: %w", HostsBucket, err)
	}
	q.logger().Warn("the hosts bucket took rollups again, as an orderly api or serve from before 2026-12-05 (night) makes it at its start (a rolling upgrade?): turned them off; any worker's NATS credential could purge every host's lease with them",
		"bucket", HostsBucket)
	return nil
}
