package order_test

import (
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
)

// TestValidateAndScreenAllocateNothingWithoutEnv: an order without
// environment variables (most of them, and the bench's) is validated and
// screened without sorting an empty key list, which cost three
// allocations in each for every submission (docs/benchmarks.md, "The
// async submit, counted again").
func TestValidateAndScreenAllocateNothingWithoutEnv(t *testing.T) {
	l := order.DefaultLimits()
	for _, env := range []map[string]string{nil, {}} {
		o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "h", Command: "true",
			Args: []string{"a"}, Timeout: time.Minute, Principal: "p", Source: "rest", Env: env}
		if n := testing.AllocsPerRun(100, func() {
			if err := order.Validate(o, l); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("Validate, env %#v: %.1f allocations, want 0", env, n)
		}
		if n := testing.AllocsPerRun(100, func() {
			if err := order.Screen(o, []string{"LD_*"}, nil, ""); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("Screen, env %#v: %.1f allocations, want 0", env, n)
		}
	}
}
