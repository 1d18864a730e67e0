package postgres_test

import (
	"errors"
	"testing"

	"github.com/orderly-run/orderly/internal/postgres"
)

// TestRecordProcessAgainAfterALostAnswer: the worker retries a process
// record whose commit's answer was lost (the connection dropped after the
// server committed), as it retries every write while PostgreSQL is away.
// The retry found its own record and answered ErrNotOwner, and the worker
// killed the order it had just started and recorded it failed, "no longer
// the host's owner". The same record again is recorded; another process,
// another worker's, or one after the successor settled the attempt is
// still refused.
func TestRecordProcessAgainAfterALostAnswer(t *testing.T) {
	e := newStoreEnv(t)
	e.own("h", "w1")
	o := e.insert("h", "p", nil)
	c := e.claim(o.ID, "w1")
	p := postgres.Process{PID: 4242, PGID: 4242, StartTime: 99, BootID: "b", MachineID: "m", Cgroup: "/sys/fs/cgroup/x"}
	if err := e.store.RecordProcess(e.ctx, o.ID, c.Attempt, "w1", p); err != nil {
		t.Fatalf("record: %v", err)
	}
	if err := e.store.RecordProcess(e.ctx, o.ID, c.Attempt, "w1", p); err != nil {
		t.Fatalf("the same record again (its first answer lost): %v", err)
	}
	other := p
	other.PID, other.PGID = 4343, 4343
	if err := e.store.RecordProcess(e.ctx, o.ID, c.Attempt, "w1", other); !errors.Is(err, postgres.ErrNotOwner) {
		t.Errorf("another process for the attempt: %v, want ErrNotOwner", err)
	}
	if err := e.store.RecordProcess(e.ctx, o.ID, c.Attempt, "w2", p); !errors.Is(err, postgres.ErrNotOwner) {
		t.Errorf("the record by another worker: %v, want ErrNotOwner", err)
	}
	if got, err := e.store.ProcessOf(e.ctx, o.ID, c.Attempt); err != nil || got == nil || got.PID != p.PID || got.Worker != "w1" {
		t.Fatalf("the attempt's record: %+v, %v", got, err)
	}
	e.own("h", "w2")
	if ok, err := e.store.InterruptAttempt(e.ctx, o.ID, c.Attempt, "w2", "test"); !ok || err != nil {
		t.Fatalf("interrupt: %v %v", ok, err)
	}
	if err := e.store.RecordProcess(e.ctx, o.ID, c.Attempt, "w1", p); !errors.Is(err, postgres.ErrNotOwner) {
		t.Errorf("the record once the successor settled the attempt: %v, want ErrNotOwner", err)
	}
}
