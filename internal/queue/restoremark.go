package queue

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
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

// signedGenerationKey is the publish generation's key in MarksBucket when
// the API signs it (SignGenerations): a key of its own, so that an API
// from before the signature, which reads postgresMarkKey as a bare
// number, neither fails on the signed value nor is read as signed.
const signedGenerationKey = "postgres.signed_generation"

// NewGenerationKey derives the publish generation's key (SignGenerations)
// from secret, the seed of the API's NATS credential, which every API
// replica shares and no worker holds; another label than NewMarkKey's,
// so that the two keys differ even from one seed.
func NewGenerationKey(secret []byte) MarkKey {
	return deriveKey(secret, "orderly publish generation key v1")
}

// SignGenerations has the API write the publish generation signed with
// k, and trust only one signed so: any connection to NATS, a worker's
// seed among them, makes the server store a body of its choice on any
// subject of the account by naming it as the reply subject of a
// JetStream API request (decisions.md, hA18), and a generation forged
// far ahead had the API find a restore of PostgreSQL at each comparison:
// its orders not yet published canceled instead of published, an ERROR
// every second, and past PostgreSQL's bigint every raise failing. Nil k
// (no NATS seed to derive it from) leaves the generation unsigned, as
// before. Called before the API's intake runs.
func (q *Queue) SignGenerations(k MarkKey) {
	if k == nil {
		q.genKey.Store(nil)
		return
	}
	q.genKey.Store(&k)
}

// generationKey is SignGenerations's key, nil without.
func (q *Queue) generationKey() MarkKey {
	if k := q.genKey.Load(); k != nil {
		return *k
	}
	return nil
}

// signedGeneration is the publish generation as signedGenerationKey
// holds it.
type signedGeneration struct {
	Generation uint64 `json:"generation"`
	Sig        string `json:"sig"`
}

// signGeneration is the hex HMAC-SHA256 under k of the generation's key
// and gen.
func (k MarkKey) signGeneration(gen uint64) string {
	return k.macf("%s\n%d", signedGenerationKey, gen)
}

// ErrUnauthenticatedGeneration: the signed publish generation NATS holds
// was not signed with the API's key (SignGenerations).
var ErrUnauthenticatedGeneration = errors.New("the publish generation was not written with the API's NATS credential")

// ErrGenerationOfAnotherKey: the signed publish generation NATS holds is
// well formed, a generation and a signature of the form the API writes,
// but signed with another key than the API's: most likely by an API
// replica whose NATS seed differs (every replica must share one), since
// a forger must first copy the form. Unlike a value absent or garbled,
// it says who got the deployment wrong (ForeignGenerations).
var ErrGenerationOfAnotherKey = fmt.Errorf("%w: it is signed with another key", ErrUnauthenticatedGeneration)

// generationOf reads val, the value of the publish generation's key: a
// number, or with k the signed form, checked.
func generationOf(val []byte, k MarkKey) (uint64, error) {
	if k == nil {
		g, err := strconv.ParseUint(string(val), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("read %s in kv bucket %s: %q is not a generation", postgresMarkKey, MarksBucket, val)
		}
		return g, nil
	}
	var s signedGeneration
	if err := json.Unmarshal(val, &s); err != nil || s.Sig == "" {
		return 0, fmt.Errorf("read %s in kv bucket %s: %w: %q is not a signed generation", signedGenerationKey, MarksBucket, ErrUnauthenticatedGeneration, val)
	}
	if !hmac.Equal([]byte(s.Sig), []byte(k.signGeneration(s.Generation))) {
		if isSignature(s.Sig) {
			return 0, fmt.Errorf("read %s in kv bucket %s: %w (an API replica with another NATS seed wrote it, or another connection to NATS)",
				signedGenerationKey, MarksBucket, ErrGenerationOfAnotherKey)
		}
		return 0, fmt.Errorf("read %s in kv bucket %s: %w: its signature does not match (another connection to NATS wrote it, or an API with another credential)",
			signedGenerationKey, MarksBucket, ErrUnauthenticatedGeneration)
	}
	return s.Generation, nil
}

// isSignature reports whether sig has the form of a signature macf
// writes: 64 lowercase hex digits (HMAC-SHA256).
func isSignature(sig string) bool {
	if len(sig) != 2*sha256.Size {
		return false
	}
	for _, c := range []byte(sig) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// foreignGenerationLogEvery is how often at most the API says at ERROR
// that the publish generation it read was signed with another key: two
// replicas on different seeds read each other's at every comparison (up
// to one a second while orders flow), and one line an hour names the
// fault as well as thousands.
const foreignGenerationLogEvery = time.Hour

// foreignGenerations counts the publish generations read that another
// key signed (ErrGenerationOfAnotherKey), and when the last was read and
// the last said at ERROR (unix ns; 0: none).
type foreignGenerations struct {
	n            atomic.Uint64
	last, logged atomic.Int64
}

// ForeignGenerations reports how many reads of the publish generation
// found one signed with another key than the API's since the process
// started, and when the last did (zero: none): the sign of API replicas
// on different NATS seeds, which keep writing over each other's
// generation, so that the restore guard misses restores (docs/deploy.md,
// "One NATS seed for every API replica"). /readyz warns of it, and
// orderly_publish_generation_foreign_total counts it.
func (q *Queue) ForeignGenerations() (n uint64, last time.Time) {
	n = q.foreign.n.Load()
	if at := q.foreign.last.Load(); at != 0 {
		last = time.Unix(0, at)
	}
	return n, last
}

// foreignGeneration notes a publish generation read that another key
// signed (err, ErrGenerationOfAnotherKey's), said at ERROR once per
// foreignGenerationLogEvery.
func (q *Queue) foreignGeneration(err error) {
	now := time.Now()
	f := &q.foreign
	f.n.Add(1)
	f.last.Store(now.UnixNano())
	logged := f.logged.Load()
	if logged != 0 && now.Sub(time.Unix(0, logged)) < foreignGenerationLogEvery {
		return
	}
	if !f.logged.CompareAndSwap(logged, now.UnixNano()) {
		return // said by another read just now
	}
	q.logger().Error("the publish generation in NATS is signed with another key than this API's: another API replica runs with another NATS seed "+
		"(nats.nkey or nats.credentials; serve's API seed), and the two write over each other's generation, so restores of PostgreSQL go unseen. "+
		"Give every API replica the same seed; said once an hour while it lasts",
		"bucket", MarksBucket, "key", signedGenerationKey, "error", err,
		"see", `docs/deploy.md, "One NATS seed for every API replica"`)
}

// generationEntry is the key the publish generation is kept under with
// k, and gen's value there.
func generationEntry(gen uint64, k MarkKey) (key string, val []byte) {
	if k == nil {
		return postgresMarkKey, []byte(strconv.FormatUint(gen, 10))
	}
	val, _ = json.Marshal(signedGeneration{Generation: gen, Sig: k.signGeneration(gen)}) // two plain fields: cannot fail
	return signedGenerationKey, val
}

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
// none (a store new or lost since; readMark). Signed (SignGenerations),
// one the API's key did not sign is none, said at ERROR: trusted, it
// would be a restore of PostgreSQL found where there was none; taken as
// none, the next raise writes the API's own over it.
func (q *Queue) PostgresMark(ctx context.Context) (uint64, error) {
	k := q.generationKey()
	key, _ := generationEntry(0, k)
	e, err := q.readMark(ctx, key)
	if errors.Is(err, ErrNoMarksBucket) {
		return 0, nil
	}
	if err != nil || e == nil {
		return 0, err
	}
	g, err := generationOf(e.Value(), k)
	if errors.Is(err, ErrGenerationOfAnotherKey) {
		// Taken as none as any value the API did not sign, but said
		// for what it most likely is, and at most once an hour.
		q.foreignGeneration(err)
		return 0, nil
	}
	if errors.Is(err, ErrUnauthenticatedGeneration) {
		q.logger().Error("the publish generation in NATS was not written with the API's own NATS credential: ignored, as none, until the API writes its own "+
			"(another connection to NATS can write it; docs/security.md, \"Known gaps of a stolen worker seed\")",
			"bucket", MarksBucket, "key", key, "error", err)
		return 0, nil
	}
	return g, err
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
// it holds a higher one (another API replica's, written first). Signed
// (SignGenerations), one there that the API's key did not sign is
// written over, however high.
func (q *Queue) RaisePostgresMark(ctx context.Context, gen uint64) error {
	k := q.generationKey()
	key, val := generationEntry(gen, k)
	var err error
	for range 8 {
		var kv jetstream.KeyValue
		if kv, err = q.marksKV(ctx, true); err != nil {
			return err
		}
		var e jetstream.KeyValueEntry
		e, err = kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			_, err = kv.Create(ctx, key, val)
		case err == nil:
			if cur, perr := generationOf(e.Value(), k); perr == nil && cur >= gen {
				return nil
			}
			_, err = kv.Update(ctx, key, val, e.Revision())
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !q.forgetMarksKV(err) {
			break
		}
		// Another replica wrote first, or the bucket is gone: again.
	}
	return fmt.Errorf("write %s in kv bucket %s: %w", key, MarksBucket, err)
}
