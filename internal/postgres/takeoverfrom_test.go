package postgres_test

import (
	"errors"
	"testing"

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
