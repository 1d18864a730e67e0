package client_test

import (
	"testing"

	"github.com/orderly-run/orderly/api/client"
)

// TestNewRefusesATokenThatCannotBeSent: a token read from a file with its
// line end is refused at once. Accepted, every call failed as a transport
// error (net/http refuses the header), which Temporary calls worth
// retrying, so the mistake looked like an API that is down.
func TestNewRefusesATokenThatCannotBeSent(t *testing.T) {
	for _, tok := range []string{"ord_abc\n", "ord_abc\r\n", "ord\x00abc", "ord\x7fabc"} {
		if _, err := client.New("http://127.0.0.1:8080", tok); err == nil {
			t.Errorf("New accepts the token %q", tok)
		}
	}
	if _, err := client.New("http://127.0.0.1:8080", "ord_abc"); err != nil {
		t.Fatal(err)
	}
}
