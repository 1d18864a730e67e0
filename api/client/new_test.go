package client_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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

// TestTemporaryLeavesOutSetupMistakes: an https:// URL of a plain HTTP
// API and a certificate the client does not trust fail every call alike;
// Temporary said they were worth retrying, so a program retrying
// temporary errors (and the CLI's keyed --retry-for) retried a typo. A
// refused connection is still temporary.
func TestTemporaryLeavesOutSetupMistakes(t *testing.T) {
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	untrusted := httptest.NewTLSServer(http.NotFoundHandler())
	defer untrusted.Close()
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close()
	for _, tc := range []struct {
		url       string
		temporary bool
	}{
		{"https://" + strings.TrimPrefix(plain.URL, "http://"), false},
		{untrusted.URL, false},
		{downURL, true},
	} {
		c, err := client.New(tc.url, "ord_abc")
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Hosts(t.Context())
		var te *client.TransportError
		if !errors.As(err, &te) || client.Temporary(err) != tc.temporary {
			t.Errorf("%s: %v (%T), Temporary = %v, want %v", tc.url, err, err, client.Temporary(err), tc.temporary)
		}
	}
}

// TestRateLimitRetriesOnlyWhatItCanWait: a 429 whose Retry-After is past
// what the client waits (an action's limit answers in minutes) is
// returned at once. It was waited for 30 s per retry, three times, and
// refused each time: `orderly action run` sat silent for 90 s before
// saying the action's limit was reached.
func TestRateLimitRetriesOnlyWhatItCanWait(t *testing.T) {
	for _, tc := range []struct {
		retryAfter string
		requests   int
	}{
		{"0", 4}, // the first and three retries
		{"31", 1},
		{"300", 1},
	} {
		n := 0
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n++
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Retry-After", tc.retryAfter)
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write([]byte(`{"error":{"code":"rate_limited","message":"limited"}}`))
		}))
		c, err := client.New(srv.URL, "ord_abc")
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = c.Hosts(t.Context())
		srv.Close()
		if client.ErrorCode(err) != client.CodeRateLimited || n != tc.requests || time.Since(start) > 5*time.Second {
			t.Errorf("Retry-After %s: %v after %d requests in %s, want rate_limited after %d", tc.retryAfter, err, n, time.Since(start), tc.requests)
		}
	}
}

// TestRequestsThatCannotBeSentAreRefused: a request the API would get
// other than as written is refused before anything is sent. An argument
// or env value that is not UTF-8 was sent with U+FFFD in place of its
// bad bytes (encoding/json's way), so the host ran another command line
// than the caller's; an Idempotency-Key with a line end failed as a
// transport error that Temporary called worth retrying, so the CLI's
// keyed --retry-for said for 10 s that the API could not be reached.
func TestRequestsThatCannotBeSentAreRefused(t *testing.T) {
	var requests atomic.Int32
	var lastBody atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		b, _ := io.ReadAll(r.Body)
		lastBody.Store(string(b))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"error":{"code":"invalid_request","message":"seen"}}`))
	}))
	defer srv.Close()
	c, err := client.New(srv.URL, "ord_abc")
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		send func() error
		want string // in the error
	}{
		{"arg", func() error {
			_, err := c.Submit(ctx, client.SubmitRequest{Host: "h", Command: "rm", Args: []string{"-f", "caf\xe9"}}, client.SubmitOptions{})
			return err
		}, "args[1] is not valid UTF-8"},
		{"env value", func() error {
			_, err := c.Submit(ctx, client.SubmitRequest{Host: "h", Command: "env", Env: map[string]string{"X": "\xfe"}}, client.SubmitOptions{})
			return err
		}, "env.X is not valid UTF-8"},
		{"action param", func() error {
			_, err := c.RunAction(ctx, "rotate", "h", map[string]any{"file": "a\xffb"}, client.SubmitOptions{})
			return err
		}, "params.file is not valid UTF-8"},
		{"runbook env var", func() error {
			_, err := c.ExecuteRunbook(ctx, "Deploy.md", client.RunbookRequest{EnvVars: map[string]any{"V": "\xc3"}}, client.SubmitOptions{})
			return err
		}, "env_vars.V is not valid UTF-8"},
		{"idempotency key", func() error {
			_, err := c.Submit(ctx, client.SubmitRequest{Host: "h", Command: "true"}, client.SubmitOptions{IdempotencyKey: "a\nb"})
			return err
		}, "Idempotency-Key"},
	} {
		err := tc.send()
		var te *client.TransportError
		if err == nil || !strings.Contains(err.Error(), tc.want) || errors.As(err, &te) || client.Temporary(err) {
			t.Errorf("%s: %v (Temporary %v), want an error naming %q", tc.name, err, client.Temporary(err), tc.want)
		}
		if n := requests.Load(); n != 0 {
			t.Fatalf("%s: %d requests sent", tc.name, n)
		}
	}
	// Valid text, U+FFFD written by the caller included, goes as it is.
	_, err = c.Submit(ctx, client.SubmitRequest{Host: "h", Command: "echo", Args: []string{"café \ufffd"}}, client.SubmitOptions{IdempotencyKey: "k\t1"})
	if client.ErrorCode(err) != client.CodeInvalid || requests.Load() != 1 || !strings.Contains(lastBody.Load().(string), `"café �"`) {
		t.Errorf("valid text: %v after %d requests, body %v", err, requests.Load(), lastBody.Load())
	}
}

// TestNewRefusesAVersionedBase: a base URL ending in /v1 (copied from a
// route) made every call /v1/v1/…, answered with a bare "no such route".
func TestNewRefusesAVersionedBase(t *testing.T) {
	for _, u := range []string{"http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1/", "https://gw.example/orderly/v1"} {
		if _, err := client.New(u, "ord_abc"); err == nil || !strings.Contains(err.Error(), "without /v1") {
			t.Errorf("New(%q): %v, want a refusal naming /v1", u, err)
		}
	}
	for _, u := range []string{"http://127.0.0.1:8080", "http://127.0.0.1:8080/", "https://gw.example/orderly", "https://gw.example/v10"} {
		if _, err := client.New(u, "ord_abc"); err != nil {
			t.Errorf("New(%q): %v", u, err)
		}
	}
}
