package api

import (
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestRateLimiterBurstThenRefill(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	l := newRateLimiter(clk.now)
	for i := range 6 {
		if ok, _ := l.allow("a", 6); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	ok, wait := l.allow("a", 6)
	if ok || wait != 10*time.Second {
		t.Fatalf("7th request: ok=%v wait=%s, want refused for 10s", ok, wait)
	}
	// Other keys have their own buckets.
	if ok, _ := l.allow("b", 6); !ok {
		t.Fatal("key b limited by key a")
	}
	clk.t = clk.t.Add(5 * time.Second)
	if ok, wait := l.allow("a", 6); ok || wait != 5*time.Second {
		t.Fatalf("after 5s: ok=%v wait=%s, want refused for 5s", ok, wait)
	}
	clk.t = clk.t.Add(5 * time.Second)
	if ok, _ := l.allow("a", 6); !ok {
		t.Fatal("after 10s the bucket has a token again")
	}
	// Lowering the limit (a reload) applies at once; 0 is off.
	clk.t = clk.t.Add(time.Minute)
	for range 2 {
		if ok, _ := l.allow("a", 2); !ok {
			t.Fatal("refused within the new limit")
		}
	}
	if ok, _ := l.allow("a", 2); ok {
		t.Fatal("the lowered limit is not applied")
	}
	if ok, _ := l.allow("a", 0); !ok {
		t.Fatal("limit 0 must mean off")
	}
}

func TestRateLimiterSweepsIdleBuckets(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	l := newRateLimiter(clk.now)
	for _, k := range []string{"a", "b", "c"} {
		l.allow(k, 10)
	}
	clk.t = clk.t.Add(30 * time.Second)
	l.allow("c", 10)
	clk.t = clk.t.Add(40 * time.Second) // a and b idle 70s, c 40s
	l.allow("d", 10)
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.buckets["a"]; ok || len(l.buckets) != 2 {
		t.Fatalf("after the sweep: %d buckets, want c and d", len(l.buckets))
	}
}

func TestIPRateKey(t *testing.T) {
	cases := map[string]string{
		"192.0.2.7":             "192.0.2.7",
		"::ffff:192.0.2.7":      "192.0.2.7",
		"2001:db8:1:2:3:4:5:6":  "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1":  "2001:db8:1:2::/64",
		"2001:db8:1:3::1":       "2001:db8:1:3::/64",
		"not an address":        "not an address",
		"fe80::1%eth0":          "fe80::/64",
		"127.0.0.1":             "127.0.0.1",
		"::1":                   "::/64",
		"2001:db8::1234:5678:9": "2001:db8::/64",
	}
	for in, want := range cases {
		if got := ipRateKey(in); got != want {
			t.Errorf("ipRateKey(%q) = %q, want %q", in, got, want)
		}
	}
}
