package api

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// TestLanes: a host's deliveries run one at a time in the order added,
// while another host's run meanwhile.
func TestLanes(t *testing.T) {
	var mu sync.Mutex
	ran := map[string][]*delivery{}
	running := map[string]int{}
	bRan := make(chan struct{})
	first := &delivery{key: "a0"}
	ln := newLanes(4, func(d *delivery) {
		mu.Lock()
		running[d.host]++
		if running[d.host] > 1 {
			t.Errorf("two deliveries of host %s at once", d.host)
		}
		mu.Unlock()
		if d == first {
			// Host a's first delivery waits for host b: the lanes are
			// parallel, or this never returns.
			select {
			case <-bRan:
			case <-time.After(10 * time.Second):
				t.Error("host b did not run while host a was busy")
			}
		}
		mu.Lock()
		running[d.host]--
		ran[d.host] = append(ran[d.host], d)
		mu.Unlock()
		if d.host == "b" {
			close(bRan)
		}
	})
	first.host = "a"
	want := []*delivery{first}
	ln.add("a", first)
	for i := range 50 {
		d := &delivery{host: "a", key: string(rune('a' + i%26))}
		want = append(want, d)
		ln.add("a", d)
	}
	ln.add("b", &delivery{host: "b"})
	ln.wait()
	if !slices.Equal(ran["a"], want) {
		t.Fatalf("host a ran %d deliveries out of order", len(ran["a"]))
	}
	if len(ln.holding()) != 0 {
		t.Fatalf("lanes still hold %d deliveries", len(ln.holding()))
	}
}
