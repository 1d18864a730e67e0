package intake_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// heldMaintenanceRead is the real store, counting its reads of the
// hosts in maintenance; the next read after holdNext, once made, waits
// until the test closes held: a once-a-second refresh whose answer is
// still on its way when the admin route's refresh runs, or a replica's
// first read still out when more submissions come.
type heldMaintenanceRead struct {
	*postgres.Store
	reads atomic.Int64
	mu    sync.Mutex
	held  chan struct{} // closed by the test: the held read returns
	made  chan struct{} // closed when the held read was made
}

// holdNext holds the next read: it returns the channel that lets it go
// and the one closed once it was made.
func (s *heldMaintenanceRead) holdNext() (held, made chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held, s.made = make(chan struct{}), make(chan struct{})
	return s.held, s.made
}

func (s *heldMaintenanceRead) HostsInMaintenance(ctx context.Context) (map[string]postgres.Maintenance, error) {
	s.reads.Add(1)
	s.mu.Lock()
	held, made := s.held, s.made
	s.held, s.made = nil, nil
	s.mu.Unlock()
	hosts, err := s.Store.HostsInMaintenance(ctx)
	if held != nil {
		close(made)
		<-held
	}
	return hosts, err
}

// TestMaintenanceRefreshKeepsTheNewerRead: the replica that took the
// switch applies it to its next order (the admin route reads the table
// again at once). A once-a-second read made before the switch and
// answered after the admin route's read put back the table as it was:
// the host in maintenance had its orders accepted, or the host taken out
// of it had them refused, until the next second's read.
func TestMaintenanceRefreshKeepsTheNewerRead(t *testing.T) {
	e := newIntakeEnv(t, intake.Options{})
	store := &heldMaintenanceRead{Store: e.store}
	svc := intake.New(store, e.pub, e.policy, intake.Options{}, testenv.Logger(t))
	if _, err := svc.RefreshMaintenance(e.ctx); err != nil {
		t.Fatal(err)
	}
	// raced is the switch taken while a refresh of the loop is out:
	// the loop's read made before it, answered after the admin route's
	// read after it.
	raced := func(what string, switchIt func() error) {
		t.Helper()
		held, made := store.holdNext()
		loop := make(chan error, 1)
		go func() { _, err := svc.RefreshMaintenance(e.ctx); loop <- err }()
		<-made
		if err := switchIt(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		admin := make(chan error, 1)
		go func() { _, err := svc.RefreshMaintenance(e.ctx); admin <- err }()
		// The admin route's read ends first, unless a refresh waits for
		// the one out (it need not: either order must keep the newer).
		select {
		case err := <-admin:
			if err != nil {
				t.Fatal(err)
			}
			admin = nil
		case <-time.After(2 * time.Second):
		}
		close(held)
		if err := <-loop; err != nil {
			t.Fatal(err)
		}
		if admin != nil {
			if err := <-admin; err != nil {
				t.Fatal(err)
			}
		}
	}

	raced("start", func() error {
		_, err := e.store.StartMaintenance(e.ctx, "hm1", new("disk swap"), "root")
		return err
	})
	if _, err := svc.Submit(e.ctx, alice, newOrder("hm1", "true")); order.ErrorCode(err) != order.CodeHostInMaintenance {
		t.Errorf("an order for the host just put in maintenance on this replica: %v; want refused %s", err, order.CodeHostInMaintenance)
	}
	raced("end", func() error {
		_, _, err := e.store.EndMaintenance(e.ctx, "hm1", "root")
		return err
	})
	if _, err := svc.Submit(e.ctx, alice, newOrder("hm1", "true")); err != nil {
		t.Errorf("an order for the host just taken out of maintenance on this replica: %v; want accepted", err)
	}
}

// TestMaintenanceFirstReadIsOne: a replica reads the hosts in
// maintenance at its first order (its loop reads them a second after its
// start). Submissions that come while that read is out wait for it: each
// made a read of its own, a statement per order for as long as the first
// was out (a fan-out's 16 at a time, every client retrying at a replica
// just restarted).
func TestMaintenanceFirstReadIsOne(t *testing.T) {
	e := newIntakeEnv(t, intake.Options{})
	if _, err := e.store.StartMaintenance(e.ctx, "hm2", new(""), "root"); err != nil {
		t.Fatal(err)
	}
	store := &heldMaintenanceRead{Store: e.store}
	held, _ := store.holdNext()
	svc := intake.New(store, e.pub, e.policy, intake.Options{}, testenv.Logger(t))
	const n = 16
	errs := make(chan error, n)
	for i := range n {
		go func() {
			host := "hm1"
			if i%2 == 1 {
				host = "hm2"
			}
			_, err := svc.Submit(e.ctx, alice, newOrder(host, "true"))
			if host == "hm2" && order.ErrorCode(err) == order.CodeHostInMaintenance {
				err = nil
			} else if host == "hm2" {
				err = fmt.Errorf("an order for hm2, in maintenance: %v; want refused", err)
			}
			errs <- err
		}()
	}
	// Let the others come while the first read is out (scheduling
	// only: the count is the same however long the read takes).
	for deadline := time.Now().Add(2 * time.Second); store.reads.Load() < n && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	close(held)
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := store.reads.Load(); got != 1 {
		t.Errorf("%d submissions at a replica's start read the hosts in maintenance %d times, want once", n, got)
	}
}
