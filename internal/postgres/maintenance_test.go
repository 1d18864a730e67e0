package postgres_test

import (
	"fmt"
	"slices"
	"testing"
)

// TestMaintenanceSwitchesAreReadableByAnAuditor: who put a host in
// maintenance and who took it out, when and why, is history an auditor
// reads in SQL with the role of docs/sql.md. Before migration 00028 the
// auditor had no grant on host_maintenance, and taking a host out deleted
// its row: nothing said who had switched it, either way.
func TestMaintenanceSwitchesAreReadableByAnAuditor(t *testing.T) {
	e := newStoreEnv(t)
	if _, err := e.store.StartMaintenance(e.ctx, "web-2", new("disk swap"), "alice"); err != nil {
		t.Fatal(err)
	}
	first, err := e.store.StartMaintenance(e.ctx, "web-2", nil, "zed")
	if err != nil {
		t.Fatal(err)
	}
	// Again, by another admin: its start is kept, its reason replaced.
	if _, err := e.store.StartMaintenance(e.ctx, "web-2", new("disk swap, back at 14:00"), "bob"); err != nil {
		t.Fatal(err)
	}
	// Again without a reason (orderly hosts web-2 --maintenance on), and
	// with the same one: nothing changes, nothing is logged (hB14; a
	// repeated on without a reason cleared the reason, and each was a
	// row). Before the reason changed, the one without a reason kept
	// alice's: checked above through first.
	if first.Reason != "disk swap" || first.By != "alice" {
		t.Errorf("on again without a reason: %+v, want alice's disk swap kept", first)
	}
	for _, r := range []*string{nil, new("disk swap, back at 14:00")} {
		m, err := e.store.StartMaintenance(e.ctx, "web-2", r, "yves")
		if err != nil {
			t.Fatal(err)
		}
		if m.Reason != "disk swap, back at 14:00" || m.By != "bob" || !m.Since.Equal(first.Since) {
			t.Errorf("on again (reason %v): %+v, want bob's reason and the first since %v kept", r != nil, m, first.Since)
		}
	}
	if _, was, err := e.store.EndMaintenance(e.ctx, "web-2", "carol"); err != nil || !was {
		t.Fatalf("end: %v, %v", was, err)
	}
	// Out again: nothing changes, nothing is added.
	if _, was, err := e.store.EndMaintenance(e.ctx, "web-2", "dave"); err != nil || was {
		t.Fatalf("end again: %v, %v", was, err)
	}
	if _, err := e.store.StartMaintenance(e.ctx, "web-9", new(""), "erin"); err != nil {
		t.Fatal(err)
	}

	tx := auditorTx(t, e.ctx, e.pool)
	defer tx.Rollback(e.ctx)
	rows, err := tx.Query(e.ctx, `SELECT host, action, by, reason, at <= now() FROM host_maintenance_log ORDER BY id`)
	if err != nil {
		t.Fatalf("as orderly_auditor, the switches: %v", err)
	}
	var got []string
	for rows.Next() {
		var host, action, by, reason string
		var past bool
		if err := rows.Scan(&host, &action, &by, &reason, &past); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %s by %s (%s) %v", host, action, by, reason, past))
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("as orderly_auditor, the switches: %v", err)
	}
	want := []string{
		"web-2 on by alice (disk swap) true",
		"web-2 on by bob (disk swap, back at 14:00) true",
		"web-2 off by carol (disk swap, back at 14:00) true",
		"web-9 on by erin () true",
	}
	if !slices.Equal(got, want) {
		t.Errorf("as orderly_auditor, host_maintenance_log:\n%q\nwant\n%q", got, want)
	}
	var host, by string
	if err := tx.QueryRow(e.ctx, `SELECT host, by FROM host_maintenance`).Scan(&host, &by); err != nil || host != "web-9" || by != "erin" {
		t.Errorf("as orderly_auditor, host_maintenance: %s by %s, %v; want web-9 by erin", host, by, err)
	}
	if _, err := tx.Exec(e.ctx, `DELETE FROM host_maintenance_log`); err == nil {
		t.Error("as orderly_auditor, deleting the switches' log: allowed, want permission denied")
	}
}
