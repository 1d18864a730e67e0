package natsembed

import (
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// roomToRestart is the free space the store's file system needs before
// JetStream is restarted after running out: two of the largest message
// blocks nats-server writes, so that the first writes do not fail again.
const roomToRestart = 16 << 20

// healEvery is how often a store that ran out of space is checked for
// room again.
const healEvery = 2 * time.Second

// storeFull remembers that a JetStream write failed for want of space.
// nats-server keeps such an error on the stream's store until the stream
// is loaded again: every later write to it fails, and no order can be
// queued or lease renewed, even once the disk has room, until the server
// restarts. Only a write error says so; nats-server logs it and answers
// the publisher nothing.
type storeFull struct {
	flagged atomic.Bool
}

// saw flags the store when a line nats-server logs at error level says
// that a write found no space (ENOSPC, or EDQUOT on a file system with
// quotas).
func (f *storeFull) saw(line string) {
	if strings.Contains(line, "no space left on device") || strings.Contains(line, "disk quota exceeded") {
		f.flagged.Store(true)
	}
}

// heal restarts JetStream once the store has room again after a write
// failed for want of it, which loads every stream from disk again and
// drops the errors they kept: the orders recorded meanwhile are then
// queued by the API's reconciler, without a restart of serve. Clients
// keep their connections; a pull in flight is lost, which the worker's
// stall check notices. It runs until stop is closed.
func (s *Server) heal(stop <-chan struct{}, logger *slog.Logger) {
	t := time.NewTicker(healEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if !s.full.flagged.Load() {
			continue
		}
		free, err := freeBytes(s.storeDir)
		if err != nil || free < roomToRestart {
			continue
		}
		cfg := s.ns.JetStreamConfig()
		if cfg == nil {
			continue
		}
		logger.Warn("restarting JetStream: a write to its store found no space left, and there is room again",
			"store_dir", s.storeDir, "free_bytes", free)
		s.full.flagged.Store(false)
		if err := s.restartJetStream(cfg); err != nil {
			// Flag it again: the next tick tries once more.
			s.full.flagged.Store(true)
			logger.Error("restart JetStream", "error", err)
			continue
		}
		logger.Info("JetStream restarted", "store_dir", s.storeDir)
	}
}

// restartJetStream restarts JetStream in place with cfg: every stream is
// loaded from its store again, and the memory streams (the live output's)
// are lost. Counted once it started again (JetStreamRestarts).
func (s *Server) restartJetStream(cfg *server.JetStreamConfig) error {
	if err := s.ns.ShutdownJetStream(); err != nil {
		return fmt.Errorf("shut it down: %w", err)
	}
	cfg.StoreDir = s.storeDir // EnableJetStream adds the jetstream directory again
	if err := s.ns.EnableJetStream(cfg); err != nil {
		return fmt.Errorf("start it: %w", err)
	}
	s.restarts.Add(1)
	return nil
}

// JetStreamRestarts is how many times JetStream was restarted in place
// (heal). Clients keep their connections across such a restart, so no
// reconnect tells them the memory streams were lost:
// queue.Queue.FollowRestarts takes it for the live stream.
func (s *Server) JetStreamRestarts() uint64 { return s.restarts.Load() }

// freeBytes is the space an unprivileged writer may still use on dir's
// file system.
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}
