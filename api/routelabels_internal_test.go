package api

import (
	"testing"

	"github.com/go-chi/chi/v5"
)

// TestRouteLabelsAsChi: the latency metric's route label is chi's
// RoutePattern for the same matched patterns, and a label seen before
// costs no allocation (RoutePattern took four on every request).
func TestRouteLabelsAsChi(t *testing.T) {
	var l routeLabels
	for _, patterns := range [][]string{
		{"/*", "/v1/*", "/orders"},
		{"/*", "/v1/*", "/orders/{id}"},
		{"/*", "/v1/*", "/orders/{id}/events"},
		{"/*", "/v1/*", "/orders/{id}", "/"},
		{"/*", "/ui/*", "/*"},
		{"/*/*/*", "/x//"},
		{"/"},
		{},
	} {
		rc := &chi.Context{RoutePatterns: patterns}
		want := rc.RoutePattern()
		for range 2 { // computed, then kept
			if got := l.of(rc); got != want {
				t.Errorf("%q: label %q, chi's %q", patterns, got, want)
			}
		}
		if n := testing.AllocsPerRun(100, func() { l.of(rc) }); n != 0 {
			t.Errorf("%q: %.0f allocations for a label seen before, want 0", patterns, n)
		}
	}
}
