package queue

import (
	"strings"
	"testing"
)

func TestRedactURLs(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                        "nats://127.0.0.1:4222",
		"nats://orderly:s3cret@n1:4222,nats://n2:4222": "nats://orderly:xxxxx@n1:4222,nats://n2:4222",
		"nats://t0ken@n1:4222":                         "nats://xxxxx@n1:4222",
	} {
		if got := RedactURLs(in); got != want {
			t.Errorf("RedactURLs(%q) = %q, want %q", in, got, want)
		}
	}
	_, err := Connect("nats://orderly:s3cret@127.0.0.1:1", "redact-test")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("connect error shows the password: %v", err)
	}
}
