package main

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api/client"
)

// TestGetShowsWhatHappened checks that `orderly get` tells an order that
// never started from one that ran and printed nothing, and names who
// canceled it, as the API's answer does.
func TestGetShowsWhatHappened(t *testing.T) {
	at := time.Date(2025, 1, 31, 15, 4, 5, 0, time.UTC)
	later := at.Add(3 * time.Second)
	canceledBy := "canceled by alice"
	zero := 0
	cancel := &client.Cancellation{Actor: "alice", Signal: "SIGTERM", RequestedAt: later}
	for _, c := range []struct {
		name         string
		o            client.Order
		want, absent []string
	}{
		{"canceled while queued",
			client.Order{Status: "canceled", SubmittedAt: at, FinishedAt: &later, Cancel: cancel,
				Result: &client.Result{Error: &canceledBy}},
			[]string{"Started:   -", "Cancel:    by alice at " + localTime(&later) + "\n", "Error:     canceled by alice"},
			[]string{"Duration", "--- stdout", "SIGTERM"}},
		{"killed while running",
			client.Order{Status: "killed", SubmittedAt: at, StartedAt: &at, FinishedAt: &later, Cancel: cancel,
				Result: &client.Result{DurationMS: 3000}},
			[]string{"Cancel:    by alice at " + localTime(&later) + " (SIGTERM)", "Duration:  3s", "--- stdout (0 bytes) ---"},
			nil},
		{"ran and printed nothing",
			client.Order{Status: "succeeded", SubmittedAt: at, StartedAt: &at, FinishedAt: &later,
				Result: &client.Result{ExitCode: &zero, DurationMS: 5}},
			[]string{"Duration:  5ms", "--- stdout (0 bytes) ---", "--- stderr (0 bytes) ---"},
			[]string{"Cancel"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.o.ID, c.o.Host, c.o.Command, c.o.Principal = uuid.New(), "web-3", "true", "alice"
			var out strings.Builder
			if err := printOrder(&out, &c.o); err != nil {
				t.Fatal(err)
			}
			for _, w := range c.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("%q missing from\n%s", w, out.String())
				}
			}
			for _, a := range c.absent {
				if strings.Contains(out.String(), a) {
					t.Errorf("%q in\n%s", a, out.String())
				}
			}
		})
	}
}
