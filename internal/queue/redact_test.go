package queue

import (
	"strings"
	"testing"
)

// TestConnectHidesThePassword: a server that does not answer gives a
// start-up error, logged and repeated, that names nats.url: without its
// password (config.RedactNATS, whose cases are config's tests).
func TestConnectHidesThePassword(t *testing.T) {
	_, err := Connect("nats://orderly:s3cret@127.0.0.1:1", "redact-test")
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "nats://orderly:***@127.0.0.1:1") {
		t.Fatalf("connect error: %v; want the URL named without its password", err)
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
		{"nats://orderly:s3cret@127.0.0.1:badport", "s3cret", "nats://***@127.0.0.1:badport"},
		{"nats://t0ken@127.0.0.1:badport", "t0ken", "nats://***@127.0.0.1:badport"},
		{"nats://orderly:s3%zzcret@127.0.0.1:1", "cret", "nats://***@127.0.0.1:1"},
		{"nats://orderly:s3 cret@127.0.0.1:1", "cret", "nats://***@127.0.0.1:1"},
		{"nats://orderly:ab/s3cret@127.0.0.1:1", "ab", "nats://***@127.0.0.1:1"},
		{"nats://n1:4222,nats://orderly:s3cret@127.0.0.1:badport", "s3cret", "nats://n1:4222,nats://***@127.0.0.1:badport"},
	} {
		_, err := Connect(c.in, "redact-test")
		if err == nil || strings.Contains(err.Error(), c.secret) || !strings.Contains(err.Error(), c.want) ||
			!strings.Contains(err.Error(), "not a valid URL") {
			t.Errorf("Connect(%q) = %v, want it to name %s and not %q", c.in, err, c.want, c.secret)
		}
	}
}
