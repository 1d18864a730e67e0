package api_test

import "testing"

// TestNATSSubmissionWithHostsIsRefusedByName: a NATS submission is for
// the host of its subject; one that fans out with hosts is refused
// naming hosts, not told that its body's host (which it did not send)
// must match the subject; one whose body names another host is told both
// hosts.
func TestNATSSubmissionWithHostsIsRefusedByName(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	a := e.publish("alice", "nhosts", "hosts-1", map[string]any{"hosts": []string{"nhosts"}, "command": "true"})
	if a.Error == nil || a.Error.Code != "invalid_request" || a.Error.Details["field"] != "hosts" {
		t.Fatalf("answer %+v (error %+v)", a, a.Error)
	}
	a = e.publish("alice", "nhosts", "hosts-2", map[string]any{"host": "other", "command": "true"})
	const want = "the body's host other is not nhosts, the host of the subject orderly.submit.nhosts it was published to: leave host out, or publish to orderly.submit.other"
	if a.Error == nil || a.Error.Code != "invalid_request" || a.Error.Details["field"] != "host" || a.Error.Message != want {
		t.Fatalf("another host in the body: %+v (error %+v), want the message %q", a, a.Error, want)
	}
	// A body host that is no host id is not repeated.
	a = e.publish("alice", "nhosts", "hosts-3", map[string]any{"host": "not a host\n", "command": "true"})
	if a.Error == nil || a.Error.Code != "invalid_request" || a.Error.Details["field"] != "host" || a.Error.Message != "host must be 1-128 characters of [A-Za-z0-9_-]" {
		t.Fatalf("a body host that is no host id: %+v (error %+v)", a, a.Error)
	}
}
