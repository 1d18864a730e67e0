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

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/postgres"
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
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
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
// file and a synced directory.
func writeFileSynced(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
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
