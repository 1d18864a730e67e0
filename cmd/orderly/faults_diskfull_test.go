package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/testenv"
)

// TestFaultsNATSStoreFull fills the disk under the external nats-server's
// JetStream store (a 48 MiB tmpfs of its own) under load, while an order
// of h1 runs across it, frees the space 8 s later and restarts
// nats-server (SIGKILL) 4 s after that: freeing space alone does not
// heal it, since nats-server keeps each stream's write error until the
// stream is loaded again (docs/reliability.md, "A full disk"). Orders
// submitted meanwhile answer 503 and are queued by the reconciler; the
// contract holds across it. In short_of_room, nats-server comes back
// allowing less file storage than the streams reserve (what it derives
// from the space free after a full disk, here written as its
// max_file_store), and a second API starts against it, which waited for
// NATS for good before (TestStreamsOnAServerShortOfStorage, internal/queue).
func TestFaultsNATSStoreFull(t *testing.T) {
	testenv.NeedRootTools(t, "filling a file system of its own", "a tmpfs mount under the nats-server store")
	for _, tc := range []struct {
		name     string
		maxAfter string // the restarted server's max_file_store
	}{
		{"room_back", "4G"},
		{"short_of_room", "100M"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var store string
			s := newFaultStackOn(t, "ofd-", func(s *faultStack) string {
				store = filepath.Join(s.dir, "jetstream")
				if err := os.MkdirAll(store, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := syscall.Mount("tmpfs", store, "tmpfs", 0, "size=48m"); err != nil {
					t.Fatalf("mount a tmpfs on %s: %v", store, err)
				}
				t.Cleanup(func() { _ = syscall.Unmount(store, syscall.MNT_DETACH) })
				s.nats = newNATSServer(t, s.dir, "")
				// Set, not derived from the free space of a 48 MiB disk:
				// ORDERLY_SUBMIT reserves 1 GiB.
				s.nats.setMaxFileStore("4G")
				s.nats.start()
				return s.nats.url()
			}, nil)
			runFaultScenarioOn(t, s, map[string]int{"h1": 1, "h2": 1}, func(r *faultRun) {
				_, tag := r.victim("h1", "10", true)
				r.expect[tag] = "succeeded"
				fill := testenv.FillDisk(t, store)
				r.s.note("store full")
				pause(t.Context(), 8*time.Second)
				if err := os.Remove(fill); err != nil {
					t.Fatal(err)
				}
				r.s.note("space back")
				pause(t.Context(), 4*time.Second)
				r.s.nats.kill9()
				r.s.nats.setMaxFileStore(tc.maxAfter)
				r.s.nats.start()
				if tc.maxAfter != "4G" {
					r.s.startReplica()
				}
				r.fault("nats back", "h1")
				r.fault("nats back", "h2")
			})
		})
	}
}

// setMaxFileStore sets the server's jetstream max_file_store, for its
// next start.
func (n *natsServer) setMaxFileStore(size string) {
	n.t.Helper()
	b, err := os.ReadFile(n.conf)
	if err != nil {
		n.t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	lines = slices.DeleteFunc(lines, func(l string) bool { return strings.Contains(l, "max_file_store") })
	for i, l := range lines {
		if strings.Contains(l, "sync_interval: always") {
			lines = append(lines[:i+1], append([]string{"  max_file_store: " + size}, lines[i+1:]...)...)
			break
		}
	}
	if err := os.WriteFile(n.conf, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		n.t.Fatal(err)
	}
}
