package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MarksBucket holds what NATS keeps of PostgreSQL: the publish generation
// (postgres.Store.RaisePublishGeneration) the API copies after raising
// it, and each host's claim mark, which its worker writes (ClaimMark). A
// database restored from a backup holds a lower generation, which is how
// the API tells a restore (intake/restore.go), and orders queued that a
// host's worker claimed past (worker/replay.go). The API makes it at its
// start (ensure): a worker may use it, not make it.
const MarksBucket = "orderly_marks"

// postgresMarkKey is the publish generation's key in MarksBucket.
const postgresMarkKey = "postgres.generation"

// markBucket is MarksBucket's handle, opened at its first use.
type markBucket struct {
	mu sync.Mutex
	kv jetstream.KeyValue
}

// marksKV returns MarksBucket, created when create is set (the API
// raising the mark), else nil when there is none (a new or lost store).
func (q *Queue) marksKV(ctx context.Context, create bool) (jetstream.KeyValue, error) {
	m := &q.mark
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.kv != nil {
		return m.kv, nil
	}
	var kv jetstream.KeyValue
	var err error
	if create {
		if err = q.ensureStream(ctx, q.marksStream()); err == nil {
			kv, err = q.js.KeyValue(ctx, MarksBucket)
		}
	} else {
		kv, err = q.js.KeyValue(ctx, MarksBucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("kv bucket %s: %w", MarksBucket, err)
	}
	m.kv = kv
	return kv, nil
}

// marksConfig is MarksBucket's settings.
func (q *Queue) marksConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      MarksBucket,
		Description: "what NATS saw of PostgreSQL: the publish generation, which a database restored from a backup is behind, and how far each host's orders were claimed",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    q.opts.Replicas,
	}
}

// marksStream is MarksBucket's stream: what nats.go makes of marksConfig
// (CreateKeyValue; TestMarksStreamIsNATSBucket compares the two), without
// rollups. A message with Nats-Rollup: all purges a stream whole,
// whatever key it is written to, and NATS permissions cannot refuse a
// header: a worker writing its own claim mark with it wiped the publish
// generation and every other host's claim mark, which turns the restore
// guard off for every host until each writes its mark again. Nothing
// purges a key of this bucket, so it needs no rollups (nor does the hosts
// bucket: hostsStream).
func (q *Queue) marksStream() jetstream.StreamConfig {
	return q.kvStream(MarksBucket, q.marksConfig().Description)
}

// kvStream is the stream nats.go makes for a file-backed key-value
// bucket with one value per key and no TTL, without rollups: a bucket's
// stream as the hosts and marks buckets keep it (hostsStream,
// marksStream).
func (q *Queue) kvStream(bucket, description string) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              "KV_" + bucket,
		Description:       description,
		Subjects:          []string{"$KV." + bucket + ".>"},
		MaxMsgsPerSubject: 1,
		MaxBytes:          -1,
		MaxMsgSize:        -1,
		MaxMsgs:           -1,
		MaxConsumers:      -1,
		Storage:           jetstream.FileStorage,
		Replicas:          max(q.opts.Replicas, 1),
		DenyDelete:        true,
		Duplicates:        2 * time.Minute,
		AllowDirect:       true,
		Discard:           jetstream.DiscardNew,
	}
}

// forgetMarksKV drops the handle of a bucket found gone (a lost store):
// the next use opens or creates it again. A read of a bucket whose stream
// is gone finds nobody to answer it (nats.ErrNoResponders: a direct get
// has no stream behind its subject), which is how a lost store shows to
// a handle opened before: kept, every read and raise failed until a
// restart. A stream there but not answering yet (a cluster electing its
// leader) answers the same; the caller opens the bucket again, which
// asks for the stream's info, before it takes the bucket for gone.
func (q *Queue) forgetMarksKV(err error) bool {
	if !errors.Is(err, jetstream.ErrBucketNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) &&
		!errors.Is(err, jetstream.ErrNoStreamResponse) && !errors.Is(err, nats.ErrNoResponders) {
		return false
	}
	q.mark.mu.Lock()
	q.mark.kv = nil
	q.mark.mu.Unlock()
	return true
}

// PostgresMark returns the publish generation NATS holds: 0 when it holds
// none (a store new or lost since; readMark).
func (q *Queue) PostgresMark(ctx context.Context) (uint64, error) {
	e, err := q.readMark(ctx, postgresMarkKey)
	if errors.Is(err, ErrNoMarksBucket) {
		return 0, nil
	}
	if err != nil || e == nil {
		return 0, err
	}
	g, err := strconv.ParseUint(string(e.Value()), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read %s in kv bucket %s: %q is not a generation", postgresMarkKey, MarksBucket, e.Value())
	}
	return g, nil
}

// readMark reads key of MarksBucket: nil when the bucket holds none,
// ErrNoMarksBucket when there is no bucket. A handle found stale is
// dropped and the bucket opened again once: its stream's info, not a
// read nobody answered, says whether it is gone.
func (q *Queue) readMark(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	var err error
	for range 2 {
		var kv jetstream.KeyValue
		if kv, err = q.marksKV(ctx, false); err != nil {
			return nil, err
		}
		if kv == nil {
			return nil, ErrNoMarksBucket
		}
		var e jetstream.KeyValueEntry
		e, err = kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			return nil, nil
		case q.forgetMarksKV(err):
			continue
		case err != nil:
			return nil, fmt.Errorf("read %s in kv bucket %s: %w", key, MarksBucket, err)
		}
		return e, nil
	}
	return nil, fmt.Errorf("read %s in kv bucket %s: %w", key, MarksBucket, err)
}

// RaisePostgresMark makes the publish generation NATS holds gen, unless
// it holds a higher one (another API replica's, written first).
func (q *Queue) RaisePostgresMark(ctx context.Context, gen uint64) error {
	val := []byte(strconv.FormatUint(gen, 10))
	var err error
	for range 8 {
		var kv jetstream.KeyValue
		if kv, err = q.marksKV(ctx, true); err != nil {
			return err
		}
		var e jetstream.KeyValueEntry
		e, err = kv.Get(ctx, postgresMarkKey)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			_, err = kv.Create(ctx, postgresMarkKey, val)
		case err == nil:
			if cur, perr := strconv.ParseUint(string(e.Value()), 10, 64); perr == nil && cur >= gen {
				return nil
			}
			_, err = kv.Update(ctx, postgresMarkKey, val, e.Revision())
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !q.forgetMarksKV(err) {
			break
		}
		// Another replica wrote first, or the bucket is gone: again.
	}
	return fmt.Errorf("write %s in kv bucket %s: %w", postgresMarkKey, MarksBucket, err)
}
