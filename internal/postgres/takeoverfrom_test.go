package postgres_test

import (
	"errors"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/postgres"
)

// TestTakeHostFromDecidesBetweenTwoWrites: two workers that each wrote a
// host's lease key after reading its owner (a standby's take, a holder's
// plain put) take the host over, or confirm the put, on condition of
// what they read: the first to commit holds the host, and the other is
// refused, whatever order their key writes landed in.
func TestTakeHostFromDecidesBetweenTwoWrites(t *testing.T) {
	e := newStoreEnv(t)
	read := func(host string) (string, int64) {
		t.Helper()
		owner, epoch, err := e.store.OwnerEpoch(e.ctx, host)
		if err != nil {
			t.Fatal(err)
		}
		return owner, epoch
	}
	take := func(host, me, from string, epoch int64) error {
		_, _, err := e.store.TakeHostFrom(e.ctx, host, "test", postgres.Owner{Instance: me}, from, epoch)
		return err
	}
	// A host nobody took yet: read as nobody at epoch 0.
	if owner, epoch := read("h"); owner != "" || epoch != 0 {
		t.Fatalf("a new host's owner: %q at %d", owner, epoch)
	}
	if err := take("h", "A", "", 0); err != nil {
		t.Fatalf("the first takeover: %v", err)
	}
	// Two standbys read A; B commits first.
	owner, epoch := read("h")
	if err := take("h", "B", owner, epoch); err != nil {
		t.Fatalf("B's takeover: %v", err)
	}
	if err := take("h", "C", owner, epoch); !errors.Is(err, postgres.ErrHostTakenMeanwhile) {
		t.Fatalf("C's takeover on the owner read before B's: %v, want ErrHostTakenMeanwhile", err)
	}
	// A, which put its key back after reading itself the owner, is
	// refused at its confirmation.
	if ok, err := e.store.ConfirmOwner(e.ctx, "h", "A"); ok || err != nil {
		t.Fatalf("A's confirmation after B's takeover: %t, %v", ok, err)
	}
	// B's confirmation of a put of its own commits first: a take that
	// read B before it is refused.
	owner, epoch = read("h")
	if ok, err := e.store.ConfirmOwner(e.ctx, "h", "B"); !ok || err != nil {
		t.Fatalf("B's confirmation: %t, %v", ok, err)
	}
	if err := take("h", "D", owner, epoch); !errors.Is(err, postgres.ErrHostTakenMeanwhile) {
		t.Fatalf("D's takeover on the owner read before B's confirmation: %v, want ErrHostTakenMeanwhile", err)
	}
	if owner, _ := read("h"); owner != "B" {
		t.Fatalf("the host's owner: %q, want B", owner)
	}
}

// TestTakeHostFromRefusesAFirstTakeoverCommittedMeanwhile: a host with
// no row yet (nobody ever took it) read as nobody at epoch 0 by two
// workers whose key writes both landed. The first takeover's insert is
// not committed when the second's SELECT … FOR UPDATE runs, so it finds
// no row to lock and to check; its INSERT … ON CONFLICT waited for the
// first's and then updated the row the first had just committed: both
// took the host over "from nobody", and the loser went on with a
// takeover (settling, reaping, making the consumer again) on a host it
// does not own. The upsert itself is conditioned on the owner read.
func TestTakeHostFromRefusesAFirstTakeoverCommittedMeanwhile(t *testing.T) {
	e := newStoreEnv(t)
	first, err := e.pool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Rollback(e.ctx)
	// The first worker's takeover, as TakeHostFrom writes it, held open.
	if _, err := first.Exec(e.ctx, `INSERT INTO hosts (host, version, instance, owner, owner_epoch, owned_at)
		VALUES ('h', 'test', 'B', 'B', 1, now())`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := e.store.TakeHostFrom(e.ctx, "h", "test", postgres.Owner{Instance: "A"}, "", 0)
		done <- err
	}()
	// The second's upsert waits for the first's insert.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var waiting int
		if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO hosts%'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the second takeover did not wait for the first's insert: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the second takeover never waited for the first's insert")
		}
	}
	if err := first.Commit(e.ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, postgres.ErrHostTakenMeanwhile) {
		t.Errorf("the second takeover from nobody, after the first committed: %v, want ErrHostTakenMeanwhile", err)
	}
	if owner, epoch, err := e.store.OwnerEpoch(e.ctx, "h"); err != nil || owner != "B" || epoch != 1 {
		t.Errorf("the host's owner: %q at %d (%v), want B at 1", owner, epoch, err)
	}
}
