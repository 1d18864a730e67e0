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

// TestConnectHidesTheSecretOfAURLThatDoesNotParse: a password holding a
// character a URL reserves (a generated one with / or %, or a space) or a
// typo in the port makes the URL fail to parse, and url.Parse's error
// quotes it whole: the start-up error, logged and repeated, showed the
// password or token. It names the URL without them now, and says why it
// failed without quoting any piece of it.
func TestConnectHidesTheSecretOfAURLThatDoesNotParse(t *testing.T) {
	for _, c := range []struct{ in, secret, want string }{
		{"nats://orderly:s3cret@127.0.0.1:badport", "s3cret", "nats://xxxxx@127.0.0.1:badport"},
		{"nats://t0ken@127.0.0.1:badport", "t0ken", "nats://xxxxx@127.0.0.1:badport"},
		{"nats://orderly:s3%zzcret@127.0.0.1:1", "cret", "nats://xxxxx@127.0.0.1:1"},
		{"nats://orderly:s3 cret@127.0.0.1:1", "cret", "nats://xxxxx@127.0.0.1:1"},
		{"nats://orderly:ab/s3cret@127.0.0.1:1", "ab", "nats://xxxxx@127.0.0.1:1"},
		{"nats://n1:4222,nats://orderly:s3cret@127.0.0.1:badport", "s3cret", "nats://n1:4222,nats://xxxxx@127.0.0.1:badport"},
	} {
		_, err := Connect(c.in, "redact-test")
		if err == nil || strings.Contains(err.Error(), c.secret) || !strings.Contains(err.Error(), c.want) ||
			!strings.Contains(err.Error(), "not a valid URL") {
			t.Errorf("Connect(%q) = %v, want it to name %s and not %q", c.in, err, c.want, c.secret)
		}
	}
	// A password holding / with a port of digits before it parses, as a
	// host and a path: no user, and still hidden.
	if got, want := RedactURLs("nats://orderly:12/s3cret@n1:4222"), "nats://xxxxx@n1:4222"; got != want {
		t.Errorf("RedactURLs = %q, want %q", got, want)
	}
}
