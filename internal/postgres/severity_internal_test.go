package postgres

import (
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/orderly-run/orderly/internal/order"
)

// TestRefusedStatementWhateverTheServersLanguage: PostgreSQL sends a
// message's severity twice, in the session's lc_messages and in English
// (since 9.6). A server set to German answers a refused statement
// "FEHLER" (probed: psql against a cluster with lc_messages de_DE.UTF-8,
// `FEHLER:  42P01: Relation »nope« existiert nicht`). Read by the
// localized one, every ERROR looked like a FATAL: an insert refused for
// want of disk was fenced (its backend ended, inserted again), and a group
// commit whose transaction one order's trigger refused (an action's limit)
// gave that refusal to every order of the group instead of sending them
// back to insert alone.
func TestRefusedStatementWhateverTheServersLanguage(t *testing.T) {
	for _, c := range []struct {
		severity, unlocalized string
		want                  bool
	}{
		{"ERROR", "ERROR", true},
		{"FEHLER", "ERROR", true},
		{"ERREUR", "ERROR", true},
		{"FATAL", "FATAL", false},
		{"FATAL", "", false}, // a server before 9.6: the localized one only
		{"ERROR", "", true},
		{"PANIK", "PANIC", false},
	} {
		pgErr := &pgconn.PgError{Severity: c.severity, SeverityUnlocalized: c.unlocalized, Code: diskFullState,
			Message: `could not extend file "base/1/2": No space left on device`}
		err := fmt.Errorf("insert order: %w", pgErr)
		if got := refusedStatement(err); got != c.want {
			t.Errorf("refusedStatement(severity %q, unlocalized %q) = %v, want %v", c.severity, c.unlocalized, got, c.want)
		}
		if !c.want {
			continue
		}
		// The insert's answer: 503, nothing recorded, send it again.
		if e := notRecordedRefusal(translate("insert order", pgErr)); order.ErrorCode(e) != order.CodeUnavailable ||
			!strings.Contains(e.Error(), "nothing was recorded") {
			t.Errorf("an insert refused for disk, severity %q: %v; want 503 saying nothing was recorded", c.severity, e)
		}
	}
}
