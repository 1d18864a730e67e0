package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrNotProvisioned means the streams or the KV bucket do not exist yet and
// this connection may not create them: a worker's NATS permissions let it
// use the objects, not define them (docs/security.md, "The bus").
var ErrNotProvisioned = errors.New("the JetStream streams and KV bucket do not exist yet: start orderly api (or serve) first, it creates them")

// Bind returns a Queue over objects that already exist, without creating or
// updating any: a worker must not be able to change a stream's settings (its
// subjects, limits or retention) for every other host. When they do not
// exist and nc may create them (a broker without permissions, as in tests),
// it falls back to New; otherwise it fails with ErrNotProvisioned.
func Bind(ctx context.Context, nc *nats.Conn, opts Options) (*Queue, error) {
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = 15 * time.Second
	}
	if opts.AckWait <= 0 {
		opts.AckWait = 30 * time.Second
	}
	if opts.FinishedTTL < time.Second {
		opts.FinishedTTL = time.Minute
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	kv, err := js.KeyValue(ctx, HostsBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		q, nerr := New(ctx, nc, opts)
		if nerr != nil {
			return nil, fmt.Errorf("%w (creating them failed: %v)", ErrNotProvisioned, nerr)
		}
		return q, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bind kv bucket %s: %w", HostsBucket, err)
	}
	// Read as a stream, not as the bucket's status, and kept: the
	// lease's takes read the bucket's last sequence from it (hostsRead).
	st, err := js.Stream(ctx, "KV_"+HostsBucket)
	if err != nil {
		return nil, fmt.Errorf("read kv bucket %s: %w", HostsBucket, err)
	}
	if ttl := st.CachedInfo().Config.MaxAge; ttl > 0 {
		// The bucket's TTL expires leases, whoever set it (the API's
		// nats.lease_ttl): that is how long this worker's lease lasts.
		opts.LeaseTTL = ttl
	}
	q := &Queue{nc: nc, js: js, kv: kv, opts: opts, ends: endsHeader(opts.FinishedTTL)}
	q.keepHosts(st)
	// A worker's requests (its lease, its heartbeat, its claim mark) are
	// sent again when the connection drops under them, as the API's
	// publishes are (drops.go).
	q.drops.watch(nc)
	return q, nil
}

// LeaseTTL is how long a host's lease lasts without a renewal: the hosts
// bucket's TTL for a bound queue.
func (q *Queue) LeaseTTL() time.Duration { return q.opts.LeaseTTL }

// BucketTTL reads the hosts bucket's TTL now: the API sets it at each of
// its starts from its nats.lease_ttl, so it may have changed since this
// queue was bound (LeaseTTL keeps what it was then).
// What it reads is kept for the lease's waits and takes (hostsRead).
func (q *Queue) BucketTTL(ctx context.Context) (time.Duration, error) {
	st, err := q.readHosts(ctx)
	if err != nil {
		return 0, fmt.Errorf("read kv bucket %s: %w", HostsBucket, err)
	}
	return st.CachedInfo().Config.MaxAge, nil
}

// RenewEvery is how often a worker whose nats.heartbeat is heartbeat
// renews a lease of ttl: every heartbeat while three renewals fit in the
// lease (one lost or late renewal does not cost the host), every third
// of the lease otherwise. A ttl of 0 (no expiry) keeps heartbeat.
func RenewEvery(heartbeat, ttl time.Duration) time.Duration {
	if ttl <= 0 || 3*heartbeat <= ttl {
		return heartbeat
	}
	return max(ttl/3, 10*time.Millisecond)
}

// HostsBucketTTL reads the TTL of the hosts bucket as it stands, without
// creating or changing anything; ok is false when there is none yet (or
// it cannot be read).
func HostsBucketTTL(ctx context.Context, nc *nats.Conn) (ttl time.Duration, ok bool) {
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, false
	}
	kv, err := js.KeyValue(ctx, HostsBucket)
	if err != nil {
		return 0, false
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return 0, false
	}
	return st.TTL(), true
}
