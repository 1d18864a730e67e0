package intake

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
)

// MaintenanceEvery is how often each API replica reads the hosts in
// maintenance again (host_maintenance, one small statement): the longest
// another replica than the one that took the switch accepts orders for
// a host just put in maintenance. The replica that took it refreshes at
// once.
const MaintenanceEvery = time.Second

// maintenanceCache is what the submit path reads of host_maintenance: a
// map swapped whole, read without a lock and without a statement, so the
// check costs an order a map lookup (docs/decisions.md, "A host in
// maintenance refuses new orders").
type maintenanceCache struct {
	begun atomic.Uint64 // reads begun, numbering them
	last  atomic.Pointer[maintenanceRead]
	// first is held by the submission that makes the process's first
	// read; the others wait for it rather than each read the table.
	first chan struct{}
}

// maintenanceRead is one read of host_maintenance, numbered in the order
// the reads began.
type maintenanceRead struct {
	seq   uint64
	hosts map[string]postgres.Maintenance
}

// RefreshMaintenance reads the hosts in maintenance again: each second
// (Run), and at once after this replica changed one (the admin route).
// A read is kept only if none begun after it was kept first: the
// second's read out when an admin switched a host here, answered after
// the admin route's own read, would put back the table as it was before
// the switch until the next second (TestMaintenanceRefreshKeepsTheNewerRead).
func (s *Service) RefreshMaintenance(ctx context.Context) (int, error) {
	seq := s.maintenance.begun.Add(1)
	hosts, err := s.store.HostsInMaintenance(ctx)
	if err != nil {
		return 0, err
	}
	read := &maintenanceRead{seq: seq, hosts: hosts}
	for {
		kept := s.maintenance.last.Load()
		if kept != nil && kept.seq > seq {
			break
		}
		if s.maintenance.last.CompareAndSwap(kept, read) {
			break
		}
	}
	// 0: every's line is for work done, and this runs every second.
	return 0, nil
}

// inMaintenance reports whether host is in maintenance. Until the first
// read it reads once: a replica just started must not accept an order
// for a host in maintenance for want of having looked. One submission
// reads and those that come meanwhile wait for its answer: each read
// for itself, a replica started under load (a fan-out's 16 at a time,
// clients retrying while it was down) made a statement per order until
// the first read was answered (TestMaintenanceFirstReadIsOne).
func (s *Service) inMaintenance(ctx context.Context, host string) (postgres.Maintenance, bool, error) {
	read := s.maintenance.last.Load()
	if read == nil {
		var err error
		if read, err = s.firstMaintenanceRead(ctx); err != nil {
			return postgres.Maintenance{}, false, err
		}
	}
	m, ok := read.hosts[host]
	return m, ok, nil
}

// firstMaintenanceRead is the process's first read of the hosts in
// maintenance, made by one submission at a time: one that waited finds
// the read of the one before it.
func (s *Service) firstMaintenanceRead(ctx context.Context) (*maintenanceRead, error) {
	select {
	case s.maintenance.first <- struct{}{}:
	case <-ctx.Done():
		return nil, &order.Error{Code: order.CodeUnavailable, Message: "the hosts in maintenance were not read yet", Err: ctx.Err()}
	}
	defer func() { <-s.maintenance.first }()
	if read := s.maintenance.last.Load(); read != nil {
		return read, nil
	}
	_, err := s.RefreshMaintenance(ctx)
	if read := s.maintenance.last.Load(); read != nil {
		return read, nil // this read, or a later one of the loop's
	}
	return nil, err
}

// MaintenanceRefusal is the refusal of a new order for a host in
// maintenance m: 409 host_in_maintenance, with who put it there, when
// and why.
func MaintenanceRefusal(m postgres.Maintenance) error {
	why := ""
	if m.Reason != "" {
		why = ": " + m.Reason
	}
	return &order.Error{Code: order.CodeHostInMaintenance,
		Message: fmt.Sprintf("host %s is in maintenance since %s (by %s)%s; new orders for it are refused until an admin takes it out of maintenance",
			m.Host, m.Since.UTC().Format(time.RFC3339), m.By, why),
		Details: map[string]any{"host": m.Host, "reason": m.Reason, "since": m.Since.UTC(), "by": m.By}}
}
