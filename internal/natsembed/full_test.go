package natsembed

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestJetStreamRecoversFromAFullStore fills the file system of the store
// under a stream, then frees it: publishing works again without a
// restart. nats-server keeps a stream's write error until the stream is
// loaded again, so before, every publish after the disk had room timed
// out, and serve answered every submission 503 until it was restarted.
func TestJetStreamRecoversFromAFullStore(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("filling a file system of its own needs root (a tmpfs mount), and CI=true runs as root")
		}
		t.Skip("needs root to mount a small tmpfs for the store")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=24m"); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })

	s, err := Start(Options{Dir: dir, Port: -1, Logger: testLogger(t), SyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "TEST", Subjects: []string{"test.>"}, Storage: jetstream.FileStorage,
	}); err != nil {
		t.Fatal(err)
	}
	publishWithin := func(d time.Duration) error {
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		_, err := js.Publish(ctx, "test.a", make([]byte, 4096))
		return err
	}
	publish := func() error { return publishWithin(time.Second) }
	// The first is given as long as a loaded machine may take: only the
	// full store's refusals are told by a second's timeout.
	if err := publishWithin(30 * time.Second); err != nil {
		t.Fatal(err)
	}

	fill := filepath.Join(dir, "fill")
	f, err := os.Create(fill)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, zeros{}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("fill the store's file system: %v, want ENOSPC", err)
	}
	f.Close()
	failed := false
	for range 10 {
		if publish() != nil {
			failed = true
			break
		}
	}
	if !failed {
		t.Fatal("publishing on a full store kept succeeding")
	}

	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	for publish() != nil {
		if time.Since(freed) > 20*time.Second {
			t.Fatal("publishing still fails 20 s after the store's file system has room again")
		}
	}
	t.Logf("publishing again %v after the space came back", time.Since(freed).Round(time.Millisecond))
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
