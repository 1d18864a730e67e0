package queue

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/maphash"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// RateBucket holds the request counters that several API replicas share
// when limits.rate_shared is set. It is a memory bucket: counters are
// worth nothing after a minute and must not cost an fsync per request.
const RateBucket = "orderly_ratelimit"

// RateCounter counts requests per key in fixed windows shared by every
// API replica, through compare-and-set updates of a KV key per key and
// window.
type RateCounter struct {
	kv     jetstream.KeyValue
	window time.Duration
	// turns serialises this replica's counts of one key (striped by a
	// hash of it): its compare-and-set then races only other replicas',
	// not its own concurrent requests, which made a burst of one client
	// lose every race and be refused far below its limit.
	seed  maphash.Seed
	turns [64]sync.Mutex
}

// RateCounter opens (creating if needed) the shared counters for windows
// of the given length.
func (q *Queue) RateCounter(ctx context.Context, window time.Duration) (*RateCounter, error) {
	kv, err := q.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      RateBucket,
		Description: "per-key request counters shared by API replicas",
		TTL:         2 * window,
		Storage:     jetstream.MemoryStorage,
		Replicas:    q.opts.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("create kv bucket %s: %w", RateBucket, replicasError(err, q.opts.Replicas))
	}
	return &RateCounter{kv: kv, window: window, seed: maphash.MakeSeed()}, nil
}

// Take counts one request for key in the current window and reports
// whether it is within limit, how many requests the window has left
// after it, and when the window ends (a refused request may come back
// then). An error means the count could not be made: NATS unreachable,
// or ErrRateContention.
func (c *RateCounter) Take(ctx context.Context, scope, key string, limit int, now time.Time) (bool, int, time.Time, error) {
	start := now.Truncate(c.window)
	end := start.Add(c.window)
	k := scope + "." + base64.RawURLEncoding.EncodeToString([]byte(key)) + "." + strconv.FormatInt(start.Unix(), 10)
	turn := &c.turns[maphash.String(c.seed, k)%uint64(len(c.turns))]
	turn.Lock()
	defer turn.Unlock()
	for range 8 {
		e, err := c.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if _, err := c.kv.Create(ctx, k, []byte("1")); err == nil {
				return limit >= 1, max(limit-1, 0), end, nil
			} else if !errors.Is(err, jetstream.ErrKeyExists) {
				return false, 0, time.Time{}, err
			}
			continue // another replica created it first
		}
		if err != nil {
			return false, 0, time.Time{}, err
		}
		n, _ := strconv.Atoi(string(e.Value()))
		if n >= limit {
			return false, 0, end, nil
		}
		if _, err := c.kv.Update(ctx, k, []byte(strconv.Itoa(n+1)), e.Revision()); err == nil {
			return true, limit - n - 1, end, nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return false, 0, time.Time{}, err
		}
		// Lost a compare-and-set race: read again.
	}
	return false, 0, time.Time{}, ErrRateContention
}

// ErrRateContention is Take's answer when every compare-and-set of the
// count lost a race: NATS is reachable, but many requests for the key
// are counted at once. That is the key's client flooding, not an outage,
// so a caller refuses the request rather than count it elsewhere.
var ErrRateContention = errors.New("rate counter: too much contention")
