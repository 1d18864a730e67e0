package queue_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestUnansweredPublishOfASilentServerIsNotBlamedOnItsStore: the path to
// nats-server carries nothing while the connection stays open (what a
// frozen server, SIGSTOP, does to its clients), and an order's publish
// goes unanswered. The API logged that the server was not storing, its
// JetStream store's disk full, and /readyz said the server does not
// store: an operator sent to free a disk that was not full. The server
// answers no ping either: the ERROR says it does not answer and where to
// look, and Storing says so; no word of a full store.
func TestUnansweredPublishOfASilentServerIsNotBlamedOnItsStore(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	path := startSilentPath(t, ns.Addr().String())
	var logs testenv.LogBuffer
	q := testenv.Queue(t, "nats://"+path.addr, "storing-silence-test", queue.Options{Logger: testenv.LoggerTo(&logs)})
	ctx := testenv.Context(t)
	if _, err := q.Publish(ctx, "h-silent", uuid.New()); err != nil {
		t.Fatalf("a publish before the silence: %v", err)
	}

	path.silence()
	// Within the client's pings' bound (PingInterval × MaxPingsOut, 10 s
	// and more): the connection is still up when the publish gives up.
	if _, err := q.Publish(ctx, "h-silent", uuid.New()); err == nil {
		t.Fatal("a publish through a silent path was answered")
	}
	line := errorLine(t, &logs, "acknowledged no order publish")
	if !strings.Contains(line, "it does not answer") || strings.Contains(line, "disk full") {
		t.Errorf("the ERROR for a silent server: %s\nwant it to say it does not answer, with no word of a full disk", line)
	}
	err := q.Storing()
	if err == nil || !strings.Contains(err.Error(), "does not answer") {
		t.Errorf("Storing with a silent server: %v, want that it does not answer", err)
	}
	path.carry()
}

// TestUnansweredPublishOfAFullStoreSaysItIsNotStoring: the disk under
// nats-server's JetStream store fills (a tmpfs of its own): the server
// answers everything, a ping included, but drops the order publishes it
// cannot store. The ERROR still says it is not storing, its store's disk
// full, and what to do, and Storing that it does not store: the ping
// that tells a silent server apart does not take this one for silent.
func TestUnansweredPublishOfAFullStoreSaysItIsNotStoring(t *testing.T) {
	testenv.NeedRootTools(t, "filling a file system of its own", "a tmpfs mount under the nats-server store")
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=48m"); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	// Set, not derived from the free space of a 48 MiB disk:
	// ORDERLY_SUBMIT reserves 1 GiB.
	ns := testenv.NATSServer(t, &server.Options{StoreDir: dir, JetStreamMaxStore: 4 << 30})
	var logs testenv.LogBuffer
	q := testenv.Queue(t, ns.ClientURL(), "storing-full-test", queue.Options{Logger: testenv.LoggerTo(&logs)})
	ctx := testenv.Context(t)
	if _, err := q.Publish(ctx, "h-full", uuid.New()); err != nil {
		t.Fatalf("a publish before the disk filled: %v", err)
	}

	f, err := os.Create(filepath.Join(dir, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, zeros{}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("fill the store's file system: %v, want ENOSPC", err)
	}
	f.Close()
	// The store's buffered writes take a few more, for a while (the API's
	// TestReadyzSaysWhenNATSDoesNotStore waits as long).
	answered := 0
	for deadline := time.Now().Add(60 * time.Second); ; answered++ {
		if time.Now().After(deadline) {
			t.Fatalf("%d publishes answered on a full store in 60 s", answered)
		}
		if _, err := q.Publish(ctx, "h-full", uuid.New()); errors.Is(err, context.DeadlineExceeded) {
			break
		}
	}
	t.Logf("%d publishes answered after the disk filled", answered)
	line := errorLine(t, &logs, "acknowledged no order publish")
	if !strings.Contains(line, "it is not storing") || !strings.Contains(line, "disk full") || strings.Contains(line, "does not answer") {
		t.Errorf("the ERROR for a full store: %s\nwant it to say it is not storing, its disk full", line)
	}
	err = q.Storing()
	if err == nil || !strings.Contains(err.Error(), "does not store") {
		t.Errorf("Storing with a full store: %v, want that the server does not store", err)
	}
}

// errorLine is the one ERROR line of logs that holds what, failing the
// test when there is none or more than one.
func errorLine(t *testing.T, logs *testenv.LogBuffer, what string) string {
	t.Helper()
	var found []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "level=ERROR") && strings.Contains(l, what) {
			found = append(found, l)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d ERROR lines with %q, want 1:\n%s", len(found), what, logs.String())
	}
	return found[0]
}

// zeros reads as an endless run of zero bytes, to fill a disk.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
