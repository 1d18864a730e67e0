package order_test

import (
	"testing"

	"github.com/orderly-run/orderly/internal/order"
)

// TestOutputHead: the head of a truncated output is what comes before the
// marker that counts the omitted bytes, whatever the count's width, and
// text that only looks like a marker is not one.
func TestOutputHead(t *testing.T) {
	truncated := func(head, tail string, omitted int64) order.Output {
		content := head + order.TruncationMarker(omitted) + tail
		return order.Output{Content: []byte(content), Bytes: int64(len(head)+len(tail)) + omitted, Truncated: true}
	}
	fake := order.TruncationMarker(5) // a marker's text the command printed
	for _, c := range []struct {
		name       string
		out        order.Output
		want       string
		wantAbsent bool
	}{
		{name: "whole", out: order.Output{Content: []byte("all\n"), Bytes: 4}, want: "all\n"},
		{name: "one digit", out: truncated("head\n", "tail\n", 9), want: "head\n"},
		{name: "two digits", out: truncated("head\n", "tail\n", 10), want: "head\n"},
		{name: "many digits", out: truncated("a", "b", 123456789012), want: "a"},
		{name: "a look-alike in the head", out: truncated("x"+fake+"y", "tail", 77), want: "x" + fake + "y"},
		{name: "a look-alike in the tail", out: truncated("head", fake, 5), want: "head"},
		{name: "no marker", out: order.Output{Content: []byte("cut"), Bytes: 10, Truncated: true}, wantAbsent: true},
	} {
		got := c.out.Head()
		if c.wantAbsent {
			if got != nil {
				t.Errorf("%s: head %q, want none", c.name, got)
			}
			continue
		}
		if string(got) != c.want {
			t.Errorf("%s: head %q, want %q", c.name, got, c.want)
		}
	}
}
