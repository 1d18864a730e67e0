package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/secretfile"
)

// presenceFile, in serve's data dir, holds the instance id of the API
// presence (api_presence) of the serve that runs, or ran last, on it.
const presenceFile = "api.instance"

// takeOverPresence ends the presence of the serve that ran on dataDir
// before this one and returns this one's, its id written in its place,
// before this serve's worker claims anything. serve holds the data dir's
// lock (lockDataDir), so that serve is dead: killed (SIGKILL, an OOM
// kill), its presence lives on up to api.PresenceLife, and the orders its
// compat clients waited for, queued still, would run for nobody when the
// worker claimed them within it. The host lease's wait (nats.lease_ttl,
// 15 s by default) used to cover that; a lease_ttl below 15 s did not.
// Ended here, they are canceled at their claim whatever the lease.
func takeOverPresence(ctx context.Context, store *postgres.Store, dataDir string, logger *slog.Logger) (*api.Presence, error) {
	path := filepath.Join(dataDir, presenceFile)
	// Only the file a serve wrote (secretfile.Read): one another user
	// planted while the data dir was theirs to write named a presence of
	// their choosing, another API's, whose waited-for orders this start
	// canceled; a FIFO blocked the start for good.
	b, err := secretfile.Read(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		if se, ok := errors.AsType[*secretfile.Error](err); ok && !se.Shared {
			return nil, fmt.Errorf("the previous serve's presence %s: serve did not leave it so; delete it", se)
		}
		return nil, fmt.Errorf("read the previous serve's presence: %w", err)
	default:
		if prev, err := uuid.ParseBytes(bytes.TrimSpace(b)); err == nil {
			if err := store.EndPresence(ctx, prev); err != nil {
				return nil, err
			}
		}
	}
	p := api.NewPresence(store, logger)
	// Written and synced before the presence binds any order: a serve
	// killed later is found by the next one.
	if err := writeFileSynced(path, []byte(p.Instance().String()+"\n")); err != nil {
		return nil, fmt.Errorf("record the API's presence: %w", err)
	}
	return p, nil
}

// writeFileSynced replaces path with data through a synced temporary
// file and a synced directory. The temporary file is made anew (O_EXCL,
// whatever was at its name removed first): opened with O_TRUNC, a
// symbolic link planted at its name had serve, as root, truncate and
// write the file it named.
func writeFileSynced(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
