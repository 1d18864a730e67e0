package testenv

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/pgembed"
	"github.com/orderly-run/orderly/migrations"
)

// PostgresOnTmpfs starts a PostgreSQL cluster of its own on a 160 MiB
// tmpfs, migrated, for a test that fills its disk (FillDisk). It returns
// the mount's directory and the cluster's DSN; the cluster is stopped and
// the tmpfs unmounted when the test ends. Root only (NeedRootTools).
func PostgresOnTmpfs(t *testing.T) (dir, dsn string) {
	t.Helper()
	NeedRootTools(t, "filling PostgreSQL's disk", "a tmpfs mount under a cluster of its own")
	ctx := Context(t)
	// Searchable by the postgres user, which runs the cluster.
	dir, err := os.MkdirTemp("", "orderly-pgfull-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=160m,mode=0755"); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	srv, err := pgembed.Start(ctx, pgembed.Options{Dir: dir, Database: "orderly"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = srv.Stop(sctx)
	})
	if _, err := migrations.Up(ctx, srv.DSN(), nil); err != nil {
		t.Fatal(err)
	}
	return dir, srv.DSN()
}

// FillDisk writes zeros to a file in dir until its filesystem is full,
// and returns the file's path: removing it gives the room back.
func FillDisk(t testing.TB, dir string) string {
	t.Helper()
	fill := filepath.Join(dir, "fill")
	f, err := os.Create(fill)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, zeroReader{}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("fill %s: %v, want ENOSPC", dir, err)
	}
	return fill
}

// zeroReader reads as an endless run of zero bytes.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
