package intake

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
)

// RestoreEvery is how often the API compares PostgreSQL's publish
// generation with the one kept in NATS and, when publish marks were
// cleared since, raises both (guardRestore).
const RestoreEvery = time.Second

// restoreGuard is what the Service knows of the publish generation
// (postgres.Store.RaisePublishGeneration, queue.RaisePostgresMark).
type restoreGuard struct {
	mu sync.Mutex // one comparison at a time
	// checked: compared once since start; until then nothing is raised,
	// or a restored database's generation could pass the one in NATS
	// before anything looked.
	checked atomic.Bool
	// dirty: publish marks were deleted since the generation was raised
	// (cleared, set by cleared).
	dirty atomic.Bool
	last  atomic.Pointer[RestoreStatus] // the last restore found, nil when none

	// failed: orders whose publish this process took for failed, until
	// their marks are gone (publishFailed); unknown: how many more there
	// were than failedMax.
	failedMu sync.Mutex
	failed   map[uuid.UUID]bool
	unknown  int
}

// failedMax bounds the failed publishes the Service remembers.
const failedMax = 4096

// RestoreStatus is the last restore of PostgreSQL the API found, for
// /v1/status.
type RestoreStatus struct {
	DetectedAt         time.Time `json:"detected_at"`
	PostgresGeneration uint64    `json:"postgres_generation"`
	NATSGeneration     uint64    `json:"nats_generation"`
	// Canceled: orders the backup held as not yet published whose
	// messages are not in the orders stream, ended as canceled.
	Canceled int `json:"orders_canceled"`
	// Queued: those whose messages are there, left to them.
	Queued int `json:"orders_left_queued"`
}

// RestoreStatus returns the last restore found since start, nil when none.
func (s *Service) RestoreStatus() *RestoreStatus {
	if st := s.restore.last.Load(); st != nil {
		c := *st
		return &c
	}
	return nil
}

// cleared notes that publish marks were deleted: the order of each was
// published or has started, which a backup taken before does not say.
// The next guardRestore raises the generation, so that such a backup is
// found behind. Every deletion from unpublished calls it, once committed.
func (s *Service) cleared() { s.restore.dirty.Store(true) }

// publishFailed remembers id, an order whose publish failed. The publish
// may have reached the stream all the same (its PubAck lost, or the
// message sent when NATS came back after the wait gave up); the worker
// then claims the order, and its claim deletes the mark, which the API
// does not see (migration 00020). Each guardRestore round looks for the
// marks of these orders, and one gone counts as cleared.
func (s *Service) publishFailed(id uuid.UUID) {
	g := &s.restore
	g.failedMu.Lock()
	defer g.failedMu.Unlock()
	if g.failed == nil {
		g.failed = map[uuid.UUID]bool{}
	}
	if len(g.failed) >= failedMax {
		g.unknown++
		return
	}
	g.failed[id] = true
}

// failedCleared looks up the marks of the failed publishes remembered,
// forgets those that are gone and reports whether any was. Past
// failedMax, orders were not remembered: each round then counts as
// cleared until every mark remembered is gone.
func (s *Service) failedCleared(ctx context.Context) (bool, error) {
	g := &s.restore
	g.failedMu.Lock()
	ids := make([]uuid.UUID, 0, len(g.failed))
	for id := range g.failed {
		ids = append(ids, id)
	}
	unknown := g.unknown > 0
	g.failedMu.Unlock()
	if len(ids) == 0 {
		if unknown {
			g.failedMu.Lock()
			g.unknown = 0
			g.failedMu.Unlock()
		}
		return unknown, nil
	}
	left, err := s.store.StillUnpublished(ctx, ids)
	if err != nil {
		return false, err
	}
	if len(left) == len(ids) {
		return unknown, nil
	}
	still := make(map[uuid.UUID]bool, len(left))
	for _, id := range left {
		still[id] = true
	}
	g.failedMu.Lock()
	for _, id := range ids {
		if !still[id] {
			delete(g.failed, id)
		}
	}
	g.failedMu.Unlock()
	return true, nil
}

// forgetStarted drops the publish marks of orders no longer queued
// (Store.ForgetStarted): those that ended while queued, and those a claim
// left to a batch's delete under way (migration 00020). A mark it drops
// counts as cleared.
func (s *Service) forgetStarted(ctx context.Context) error {
	n, err := s.store.ForgetStarted(ctx)
	if n > 0 {
		s.cleared()
	}
	return err
}

// guardRestore is the periodic comparison: at start, then each round
// after publish marks were cleared, when it also raises the generation.
func (s *Service) guardRestore(ctx context.Context) (int, error) {
	gone, err := s.failedCleared(ctx)
	if err != nil {
		return 0, err
	}
	if gone {
		s.cleared()
	}
	dirty := s.restore.dirty.Swap(false)
	if s.restore.checked.Load() && !dirty {
		return 0, nil
	}
	n, err := s.checkRestore(ctx, dirty)
	if err != nil {
		if dirty {
			s.restore.dirty.Store(true)
		}
		return n, err
	}
	s.restore.checked.Store(true)
	return n, nil
}

// checkRestore compares the publish generation NATS holds with
// PostgreSQL's, read in that order: every value NATS holds was committed
// in PostgreSQL first, and PostgreSQL's only grows, so PostgreSQL behind
// NATS means it went back in time (restored from a backup, or replaced).
// Then it settles what the backup held as not yet published
// (settleRestored) and raises PostgreSQL's generation past NATS's. With
// raise set and no restore, it raises both: publish marks were cleared
// since the last raise, and a backup taken before them must be found
// behind. A database that holds no order and was never raised is new,
// not restored: it is only raised. It returns how many orders it settled.
func (s *Service) checkRestore(ctx context.Context, raise bool) (int, error) {
	s.restore.mu.Lock()
	defer s.restore.mu.Unlock()
	natsGen, err := s.pub.PostgresMark(ctx)
	if err != nil {
		return 0, err
	}
	pgGen, err := s.store.PublishGeneration(ctx)
	if err != nil {
		return 0, err
	}
	n, fresh := 0, false
	if natsGen > pgGen && pgGen == 0 {
		// Generation 0 is a database never raised: a new one, or one
		// restored from a backup taken before its first order. With no
		// order in it, it is not behind anything it holds: nothing to
		// settle, and nothing to report as a restore.
		empty, err := s.store.HoldsNoOrders(ctx)
		if err != nil {
			return 0, err
		}
		if empty {
			s.logger.Warn("PostgreSQL is new to this NATS: it holds no orders, while NATS kept the publish generation of a database before it; "+
				"not a restore. Messages of that database's orders still in the orders stream are dropped, never run",
				"postgres_generation", pgGen, "nats_generation", natsGen, "see", "docs/deploy.md, Backup and restore")
			fresh, raise = true, true // past NATS's, as after a restore
		}
	}
	if natsGen > pgGen && !fresh {
		st := &RestoreStatus{DetectedAt: time.Now().UTC(), PostgresGeneration: pgGen, NATSGeneration: natsGen}
		s.logger.Error("PostgreSQL is behind what NATS saw: restored from a backup; the orders it holds as not yet published may have run since, and are not published again",
			"postgres_generation", pgGen, "nats_generation", natsGen, "see", "docs/deploy.md, Backup and restore")
		s.opts.Metrics.RestoreDetected()
		err := s.settleRestored(ctx, st)
		s.restore.last.Store(st)
		if err != nil {
			return st.Canceled, err
		}
		n, raise = st.Canceled, true
	}
	if !raise {
		return n, nil
	}
	gen, err := s.store.RaisePublishGeneration(ctx, natsGen)
	if err != nil {
		return n, err
	}
	return n, s.pub.RaisePostgresMark(ctx, gen)
}

// settleRestored settles the queued orders in unpublished after a restore
// was found: each was recorded before the backup, and may have been
// published and run after it, which nothing left in PostgreSQL says. One
// whose message is in the orders stream is left to it (it runs once, in
// its place, or the lost-order search ends it once its acknowledged
// message is purged); one whose message is not is ended as canceled,
// never published again: at most once, as everywhere.
func (s *Service) settleRestored(ctx context.Context, st *RestoreStatus) error {
	const batch = 500
	for {
		if err := s.forgetStarted(ctx); err != nil {
			return err
		}
		list, err := s.store.Unpublished(ctx, settleAfter, batch)
		if err != nil || len(list) == 0 {
			return err
		}
		byHost := map[string][]*order.Order{}
		var hosts []string
		for _, o := range list {
			if byHost[o.Host] == nil {
				hosts = append(hosts, o.Host)
			}
			byHost[o.Host] = append(byHost[o.Host], o)
		}
		var present, settled []uuid.UUID
		for _, host := range hosts {
			orders := byHost[host]
			ids := make([]uuid.UUID, len(orders))
			for i, o := range orders {
				ids[i] = o.ID
			}
			missing, err := s.pub.Missing(ctx, host, ids, lostScan)
			if err != nil {
				return err
			}
			gone := map[uuid.UUID]bool{}
			for _, id := range missing {
				gone[id] = true
			}
			for _, o := range orders {
				if !gone[o.ID] {
					present = append(present, o.ID)
					continue
				}
				ok, err := s.store.Cancel(ctx, o.ID, "orderly", restoredReason)
				if err != nil {
					return err
				}
				settled = append(settled, o.ID)
				if ok {
					st.Canceled++
					s.logger.Error("order canceled: PostgreSQL was restored from a backup that held it as not yet published",
						"order_id", o.ID, "host", host, "principal", o.Principal, "actor", "orderly")
					s.ended(o.ID, host, order.StatusCanceled)
				}
			}
		}
		// Their marks go: those left to their messages are published,
		// and a canceled order needs none.
		if err := s.store.MarkPublished(ctx, append(settled, present...)); err != nil {
			return err
		}
		st.Queued += len(present)
		if len(list) < batch {
			return nil
		}
	}
}

// settleAfter is how long an order must have been recorded for
// settleRestored to look at it: a younger one may be an order submitted
// since the restore whose publish has not been answered yet (a publish
// waits 5 s at most), whose message the stream does not have yet. A
// database restored from a backup taken this shortly before the API
// started again is not one a restore makes.
const settleAfter = 5 * time.Second

// restoredReason is the error of an order settleRestored ends.
const restoredReason = "PostgreSQL was restored from a backup that held this order as not yet published; it may have been published " +
	"and run after the backup, so it is not published again (docs/deploy.md, \"Backup and restore\"): check its host before resubmitting it"

// finalRaise raises the publish generation once more when Run ends, for
// the marks deleted since its last round (the last batch of clears, the
// marks of orders started since): a backup taken just before is then
// found behind too. Like every raise, it compares first.
func (s *Service) finalRaise(ctx context.Context) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := s.forgetStarted(rctx); err != nil {
		s.logger.Warn("forget started orders", "error", err)
	}
	if _, err := s.guardRestore(rctx); err != nil {
		s.logger.Warn("raise the publish generation", "error", err)
	}
}
