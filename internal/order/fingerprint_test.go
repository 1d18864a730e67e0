package order

import (
	"bytes"
	"testing"
	"time"
)

// TestFingerprint: every field an order asks for changes the fingerprint;
// the deadline (relative to each attempt's arrival) and bookkeeping do not;
// env order does not matter; length prefixes keep ["ab"] apart from ["a","b"].
func TestFingerprint(t *testing.T) {
	base := func() *Order {
		return &Order{Kind: KindExec, Host: "h", Command: "echo", Args: []string{"a", "b"}, Env: map[string]string{"A": "1", "B": "2"},
			Stdin: []byte("in"), CaptureStdout: true, CaptureStderr: true, Timeout: time.Minute, RunAs: "nobody",
			MaxOutput: 10, CorrelationID: "c"}
	}
	want := base().Fingerprint()
	same := map[string]func(*Order){
		"deadline":        func(o *Order) { t := time.Now(); o.ExpiresAt = &t },
		"id and key":      func(o *Order) { o.ID = NewID(); o.IdempotencyKey = "k" },
		"principal":       func(o *Order) { o.Principal = "p"; o.Source = "nats" }, // keys are per principal already
		"env map rebuilt": func(o *Order) { o.Env = map[string]string{"B": "2", "A": "1"} },
	}
	for name, change := range same {
		o := base()
		change(o)
		if !bytes.Equal(o.Fingerprint(), want) {
			t.Errorf("%s changed the fingerprint", name)
		}
	}
	differ := map[string]func(*Order){
		"host":          func(o *Order) { o.Host = "g" },
		"command":       func(o *Order) { o.Command = "printf" },
		"args joined":   func(o *Order) { o.Args = []string{"ab"} },
		"args split":    func(o *Order) { o.Args = []string{"a", "", "b"} },
		"env value":     func(o *Order) { o.Env["A"] = "x" },
		"env name":      func(o *Order) { o.Env = map[string]string{"A": "1", "C": "2"} },
		"stdin":         func(o *Order) { o.Stdin = nil },
		"stdout encode": func(o *Order) { o.StdoutEncode = EncodeBase64 },
		"capture":       func(o *Order) { o.CaptureStderr = false },
		"timeout":       func(o *Order) { o.Timeout = time.Second },
		"run_as":        func(o *Order) { o.RunAs = "" },
		"dry run":       func(o *Order) { o.DryRun = true },
		"idempotent":    func(o *Order) { o.Idempotent = true },
		"max output":    func(o *Order) { o.MaxOutput = 11 },
		"correlation":   func(o *Order) { o.CorrelationID = "d" },
	}
	for name, change := range differ {
		o := base()
		change(o)
		if bytes.Equal(o.Fingerprint(), want) {
			t.Errorf("%s did not change the fingerprint", name)
		}
	}
}

// TestRequestSumIsVersioned: a RequestSum is told from a Fingerprint by
// its form (a stored sum is compared in its own form), and leaves out
// nothing the client sends that a Fingerprint holds.
func TestRequestSumIsVersioned(t *testing.T) {
	o := &Order{Host: "h", Command: "echo", Args: []string{"a"}}
	sum, fp := o.RequestSum(), o.Fingerprint()
	if !IsRequestSum(sum) || IsRequestSum(fp) || len(sum) != 33 || bytes.Equal(sum[1:], fp) {
		t.Fatalf("RequestSum %x and Fingerprint %x are not told apart", sum, fp)
	}
	exec := *o
	exec.Kind = KindExec
	if !bytes.Equal(exec.RequestSum(), sum) {
		t.Fatal("kind exec sent and kind left out are different requests")
	}
	longer := *o
	longer.Timeout = time.Second
	if bytes.Equal(longer.RequestSum(), sum) {
		t.Fatal("a timeout sent does not count")
	}
}
