package api_test

import "testing"

// TestNATSSubmissionWithHostsIsRefusedByName: a NATS submission is for
// the host of its subject; one that fans out with hosts is refused
// naming hosts, not told that its body's host (which it did not send)
// must match the subject.
func TestNATSSubmissionWithHostsIsRefusedByName(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	a := e.publish("alice", "nhosts", "hosts-1", map[string]any{"hosts": []string{"nhosts"}, "command": "true"})
	if a.Error == nil || a.Error.Code != "invalid_request" || a.Error.Details["field"] != "hosts" {
		t.Fatalf("answer %+v (error %+v)", a, a.Error)
	}
	a = e.publish("alice", "nhosts", "hosts-2", map[string]any{"host": "other", "command": "true"})
	if a.Error == nil || a.Error.Code != "invalid_request" || a.Error.Details["field"] != "host" {
		t.Fatalf("another host in the body: %+v (error %+v)", a, a.Error)
	}
}
