package config

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestSectionInLogs: a reload's summary reads as fields in a text log
// line, not as Go's struct syntax.
func TestSectionInLogs(t *testing.T) {
	var b bytes.Buffer
	slog.New(slog.NewTextHandler(&b, nil)).Info("config reloaded", "rules", Section{Before: 1, After: 2, Added: []string{"ops"}})
	if got := b.String(); !strings.Contains(got, "rules.before=1 rules.after=2 rules.added=[ops]") || strings.Contains(got, "{") {
		t.Errorf("log line %q", got)
	}
}
