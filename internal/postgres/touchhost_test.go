package postgres_test

import (
	"testing"

	"github.com/orderly-run/orderly/internal/postgres"
)

// TestTouchHostByAFormerOwner: a worker thawed or stopped after its
// successor took the host over touched the host's row: the listing then
// showed the former worker's instance and version, and its stop as the
// host's last sighting, once the successor was gone. Only the owner's
// touch counts, or anyone's for a host nobody took over.
func TestTouchHostByAFormerOwner(t *testing.T) {
	e := newStoreEnv(t)
	row := func() postgres.HostRow {
		t.Helper()
		hs, err := e.store.Hosts(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hs {
			if h.Host == "th" {
				return h
			}
		}
		t.Fatal("host th not listed")
		return postgres.HostRow{}
	}
	if err := e.store.TouchHost(e.ctx, "th", "v0", "th/0"); err != nil {
		t.Fatal(err)
	}
	if err := e.store.TouchHost(e.ctx, "th", "v1", "th/a"); err != nil || row().Instance != "th/a" {
		t.Fatalf("a touch of a host nobody took over: %+v %v", row(), err)
	}
	if _, _, err := e.store.TakeHost(e.ctx, "th", "v1", postgres.Owner{Instance: "th/a"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.store.TakeHost(e.ctx, "th", "v2", postgres.Owner{Instance: "th/b"}); err != nil {
		t.Fatal(err)
	}
	before := row()
	if err := e.store.TouchHost(e.ctx, "th", "v1", "th/a"); err != nil {
		t.Fatal(err)
	}
	if got := row(); got.Instance != "th/b" || got.Version != "v2" || !got.LastSeen.Equal(before.LastSeen) {
		t.Fatalf("after the former owner's touch: %+v, want th/b's row as it was (%+v)", got, before)
	}
	if err := e.store.TouchHost(e.ctx, "th", "v2", "th/b"); err != nil {
		t.Fatal(err)
	}
	if got := row(); got.Instance != "th/b" || !got.LastSeen.After(before.LastSeen) {
		t.Fatalf("after the owner's touch: %+v, want its sighting recorded (was %v)", got, before.LastSeen)
	}
}
