package api_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/internal/testenv"
)

// TestReadyzSaysWhenNATSDoesNotStore: the disk under a separate
// nats-server's JetStream store fills, then has room again. nats-server
// keeps each stream's write error until it restarts and drops the
// publishes it cannot store without an answer, while it answers
// everything else: /readyz said ready throughout, so load balancers and
// alerts saw nothing but 503s. /readyz now says the bus does not store
// (503, with the reason) from the first publish left unanswered on a live
// connection until one is answered again, here after the restart that
// heals the server.
func TestReadyzSaysWhenNATSDoesNotStore(t *testing.T) {
	testenv.NeedRootTools(t, "filling a file system of its own", "a tmpfs mount under the nats-server store")
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=48m"); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	// Set, not derived from the free space of a 48 MiB disk:
	// ORDERLY_SUBMIT reserves 1 GiB.
	natsOn := func(port int) *server.Server {
		return testenv.NATSServer(t, &server.Options{Port: port, StoreDir: dir, JetStreamMaxStore: 4 << 30})
	}
	ns := natsOn(0)
	e := newAPIEnv(t, envOptions{natsURL: ns.ClientURL()})
	submit := func() int {
		code, _ := e.do("alice", "POST", "/v1/orders", map[string]any{"host": "h-full", "command": "true"})
		return code
	}
	if code := submit(); code != http.StatusAccepted {
		t.Fatalf("submit before the disk filled: %d", code)
	}
	if code, r := e.readyz(); code != http.StatusOK {
		t.Fatalf("readyz before the disk filled: %d %+v", code, r)
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
	testenv.WaitUntil(t, 60*time.Second, "a submission answers 503 on the full store", func() bool {
		return submit() == http.StatusServiceUnavailable
	})
	code, r := e.readyz()
	if code != http.StatusServiceUnavailable || r.Checks["nats"] != "unavailable" ||
		!strings.Contains(r.Reasons["nats"], "no acknowledgement") {
		t.Fatalf("readyz while the store is full: %d %+v, want 503 with nats unavailable and why", code, r)
	}
	t.Logf("readyz: %d %+v", code, r)

	// Room again: the server still stores nothing until it restarts.
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	if code := submit(); code != http.StatusServiceUnavailable {
		t.Logf("a submission with room again: %d (nats-server healed itself?)", code)
	}
	if code, r := e.readyz(); code != http.StatusServiceUnavailable {
		t.Errorf("readyz with room again, before the restart: %d %+v, want 503", code, r)
	}

	port := ns.Addr().(*net.TCPAddr).Port
	ns.Shutdown()
	ns.WaitForShutdown()
	natsOn(port)
	testenv.WaitUntil(t, 60*time.Second, "readyz is ready after the restart", func() bool {
		code, _ := e.readyz()
		return code == http.StatusOK
	})
	if code := submit(); code != http.StatusAccepted {
		t.Errorf("submit after the restart: %d", code)
	}
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
