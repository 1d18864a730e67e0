package order

import "testing"

// TestScreenEnvAllow: with an allow list, the API refuses what is not on
// it (case matters), as a worker would; a script's RUNBOOK_* variables are
// the API's own and always pass; without a list, only env_deny counts.
func TestScreenEnvAllow(t *testing.T) {
	allow := []string{"GREETING", "APP_*"}
	for _, c := range []struct {
		kind  Kind
		name  string
		allow []string
		ok    bool
	}{
		{KindExec, "GREETING", allow, true},
		{KindExec, "APP_MODE", allow, true},
		{KindExec, "greeting", allow, false},
		{KindExec, "LESSOPEN", allow, false},
		{KindExec, "RUNBOOK_URL", allow, false},
		{KindScript, "RUNBOOK_URL", allow, true},
		{KindExec, "ANYTHING", nil, true},
		{KindExec, "LD_PRELOAD", nil, false}, // env_deny, list or not
	} {
		o := &Order{Kind: c.kind, Env: map[string]string{c.name: "v"}}
		err := Screen(o, []string{"LD_*"}, c.allow, "")
		if (err == nil) != c.ok {
			t.Errorf("%s %s with allow %v: %v, want accepted %v", c.kind, c.name, c.allow, err, c.ok)
		}
		if err != nil && ErrorCode(err) != CodeForbidden {
			t.Errorf("%s: code %s, want forbidden", c.name, ErrorCode(err))
		}
	}
}

// TestValidateLabels: the labels a client gives an order are printable
// text of bounded length, and a timeout is at least the millisecond it is
// stored in.
func TestValidateLabels(t *testing.T) {
	for name, o := range map[string]*Order{
		"correlation NUL":       {CorrelationID: "a\x00b"},
		"correlation too long":  {CorrelationID: string(make([]byte, MaxCorrelationBytes+1))},
		"correlation not UTF-8": {CorrelationID: "a\xffb"},
		"key not UTF-8":         {IdempotencyKey: "k\xff"},
		"key too long":          {IdempotencyKey: string(make([]byte, MaxIdempotencyKeyBytes+1))},
		"timeout under 1 ms":    {Timeout: 999_999},
	} {
		o.Host, o.Command = "h1", "true"
		if err := Validate(o, DefaultLimits()); ErrorCode(err) != CodeInvalid {
			t.Errorf("%s: %v, want invalid_request", name, err)
		}
	}
	o := &Order{Host: "h1", Command: "true", CorrelationID: "deploy-42", IdempotencyKey: "k-1", Timeout: 1_000_000}
	if err := Validate(o, DefaultLimits()); err != nil {
		t.Errorf("a valid order: %v", err)
	}
}
