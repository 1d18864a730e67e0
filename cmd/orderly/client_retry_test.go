package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/postgres"
)

// countOrders counts the orders of the stack's database whose args hold
// marker.
func (s *stack) countOrders(t *testing.T, marker string) int {
	t.Helper()
	pool, err := postgres.Open(t.Context(), s.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var n int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM orders WHERE $1 = ANY(args)`, marker).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// lateProxy returns a loopback address where nothing listens (an API
// that is restarting) until the CLI, whose stderr goes to the returned
// writer too, says that it is trying again: then a proxy to the API
// listens there, before the CLI's next try. Its first try is so refused
// however late it comes; after a fixed delay, a try that came later than
// the delay (a loaded machine) was answered at once, and "trying again"
// never said.
func lateProxy(t *testing.T, api string) (addr string, stderr io.Writer) {
	t.Helper()
	target, err := url.Parse(api)
	if err != nil {
		t.Fatal(err)
	}
	addr = "127.0.0.1:" + strconv.Itoa(freePort(t))
	srv := &http.Server{Handler: httputil.NewSingleHostReverseProxy(target)}
	t.Cleanup(func() { srv.Close() })
	return addr, &upOnRetry{up: func() {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("listen: %v", err)
			return
		}
		go func() { _ = srv.Serve(ln) }()
	}}
}

// upOnRetry is a CLI's stderr that calls up once the CLI has said it
// is trying again.
type upOnRetry struct {
	mu   sync.Mutex
	text []byte
	up   func()
}

func (w *upOnRetry) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.up != nil {
		w.text = append(w.text, p...)
		if bytes.Contains(w.text, []byte("trying again")) {
			w.up()
			w.up = nil
		}
	}
	return len(p), nil
}

// dropFirstAnswer is a proxy to the API that forwards the first POST and
// then drops the connection instead of answering it, as an API that
// recorded the order and died before its answer left would; later
// requests pass through.
func dropFirstAnswer(t *testing.T, api string) string {
	t.Helper()
	target, err := url.Parse(api)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	var dropped atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || dropped.Swap(true) {
			proxy.ServeHTTP(w, r)
			return
		}
		out := r.Clone(r.Context())
		out.URL.Scheme, out.URL.Host, out.Host, out.RequestURI = target.Scheme, target.Host, target.Host, ""
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			t.Errorf("forward the first submission: %v", err)
		} else {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		conn.Close()
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestCLISubmitRetries: `orderly submit` sends a submission again while
// that cannot run it twice. An API not listening yet (a restart) is waited
// for, key or not: the request never left. An answer dropped after the
// API recorded the order is retried only with --idempotency-key, which
// makes the retry answer with the same order; without a key the CLI says
// it could not reach the API and sends nothing more.
func TestCLISubmitRetries(t *testing.T) {
	s := newStack(t, "h1")
	for _, tc := range []struct {
		name, marker string
		url          func(t *testing.T) (string, io.Writer) // the address, and a writer for the CLI's stderr too
		key          string                                 // --idempotency-key, "" for none
		exit         int
		retried      bool // stderr says it tried again
	}{
		{name: "api not up yet", marker: "late-api", exit: 0, retried: true,
			url: func(t *testing.T) (string, io.Writer) {
				addr, stderr := lateProxy(t, s.url)
				return "http://" + addr, stderr
			}},
		{name: "dropped answer with a key", marker: "keyed-drop", key: "retry-key-1", exit: 0, retried: true,
			url: func(t *testing.T) (string, io.Writer) { return dropFirstAnswer(t, s.url), io.Discard }},
		// Not sent again: the order may be recorded, and without a key a
		// second request would be a second order.
		{name: "dropped answer without a key", marker: "unkeyed-drop", exit: 1, retried: false,
			url: func(t *testing.T) (string, io.Writer) { return dropFirstAnswer(t, s.url), io.Discard }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"submit", "--host", "h1", "--wait"}
			if tc.key != "" {
				args = append(args, "--idempotency-key", tc.key)
			}
			url, stderr := tc.url(t)
			r := cliTee(t, []string{"ORDERLY_URL=" + url, "ORDERLY_TOKEN=" + s.token}, "", stderr, append(args, "--", "echo", tc.marker)...)
			wantExit(t, r, tc.exit)
			if strings.Contains(r.stderr, "trying again") != tc.retried {
				t.Errorf("stderr %q: want a retry %v", r.stderr, tc.retried)
			}
			// Its own retry's answer is its first try's order: what
			// it asked for ran once, and no note says otherwise.
			if strings.Contains(r.stderr, "was used before") {
				t.Errorf("stderr %q: a note that the order was recorded before, after the command's own retry", r.stderr)
			}
			if tc.exit == 0 && r.stdout != tc.marker+"\n" {
				t.Errorf("stdout %q", r.stdout)
			}
			if tc.exit != 0 && !strings.Contains(r.err.Error(), "cannot reach the orderly API") {
				t.Errorf("error %v", r.err)
			}
			if n := s.countOrders(t, tc.marker); n != 1 {
				t.Errorf("%d orders, want 1", n)
			}
		})
	}
}

// TestCLISubmitRefusesWhatItCannotSend: a submission that no request can
// carry as typed is refused at once, and nothing is sent. An
// Idempotency-Key with a line end was retried for --retry-for (10 s) as
// an API that "cannot be reached", then reported as one; an argument
// that is not UTF-8 ran with U+FFFD in place of its bytes. --hosts ""
// left hosts out of the body, and the API refused a host never given.
func TestCLISubmitRefusesWhatItCannotSend(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.Error(w, "unexpected", http.StatusTeapot)
	}))
	defer srv.Close()
	env := []string{"ORDERLY_URL=" + srv.URL, "ORDERLY_TOKEN=ord_abc"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"submit", "--host", "h1", "--idempotency-key", "key\n", "--", "true"}, `Idempotency-Key "key\n" holds a line end`},
		{[]string{"submit", "--host", "h1", "--wait", "--", "rm", "caf\xe9"}, "args[0] is not valid UTF-8"},
		{[]string{"submit", "--hosts", "", "--", "true"}, "--hosts is empty"},
	} {
		start := time.Now()
		r := cli(t, env, "", tc.args...)
		wantExit(t, r, 1)
		if !strings.Contains(r.err.Error(), tc.want) || strings.Contains(r.stderr, "trying again") || time.Since(start) > 2*time.Second {
			t.Errorf("%q: error %v, stderr %q after %s; want %q at once", tc.args, r.err, r.stderr, time.Since(start), tc.want)
		}
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("%d requests sent", n)
	}
}

// TestCLIUnreachableHintFitsTheCause: an API that answered over TLS the
// client does not trust, or in plain HTTP to an https:// URL, is running;
// the hint asked "is it running?" of both, and named no way to trust a
// private CA. A refused connection keeps that question.
func TestCLIUnreachableHintFitsTheCause(t *testing.T) {
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	untrusted := httptest.NewTLSServer(http.NotFoundHandler())
	defer untrusted.Close()
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close()
	for _, tc := range []struct{ url, want string }{
		{untrusted.URL, "(the API's certificate is not trusted: set SSL_CERT_FILE to the PEM file of its CA (its issuer: O=Acme Co))"},
		{"https://" + strings.TrimPrefix(plain.URL, "http://"), "(the API speaks plain HTTP: use http:// in --url or ORDERLY_URL)"},
		{downURL, "(is it running? set --url or ORDERLY_URL)"},
	} {
		r := cli(t, []string{"ORDERLY_URL=" + tc.url, "ORDERLY_TOKEN=ord_abc"}, "", "hosts")
		if r.err == nil || !strings.HasSuffix(r.err.Error(), tc.want) {
			t.Errorf("%s: %v, want it to end %q", tc.url, r.err, tc.want)
		}
	}
}

// TestCLISubmitStoppedBeforeTheAnswer: Ctrl-C while a submission is out
// (an API slow to answer: PostgreSQL or NATS slow to confirm) stops the
// CLI, but the API may have recorded the order, which then runs. The CLI
// said only "context canceled" and exited 1, so a user submitted it
// again; it now says the order may run, how to find it, and exits 130
// as a Ctrl-C while waiting does.
func TestCLISubmitStoppedBeforeTheAnswer(t *testing.T) {
	s := newStack(t, "h1")
	target, err := url.Parse(s.url)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	forwarded := make(chan struct{}, 1)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			proxy.ServeHTTP(w, r)
			return
		}
		// Forward the submission, then hold the answer until the client
		// leaves.
		rec := httptest.NewRecorder()
		proxy.ServeHTTP(rec, r.Clone(context.WithoutCancel(r.Context())))
		forwarded <- struct{}{}
		<-r.Context().Done()
	}))
	defer slow.Close()
	for _, tc := range []struct {
		key, hint string
	}{
		{"", "orderly ls --since 10m shows it"},
		{"stopped-key-1", "same --idempotency-key"},
	} {
		marker := "stopped-before-answer-" + strconv.Itoa(len(tc.key))
		args := []string{"orderly", "submit", "--host", "h1", "--wait"}
		if tc.key != "" {
			args = append(args, "--idempotency-key", tc.key)
		}
		ctx, cancel := context.WithCancel(t.Context())
		go func() {
			select {
			case <-forwarded:
			case <-time.After(30 * time.Second):
			}
			cancel() // Ctrl-C
		}()
		var out, errb strings.Builder
		err := run(ctx, append(args, "--", "echo", marker), []string{"ORDERLY_URL=" + slow.URL, "ORDERLY_TOKEN=" + s.token},
			strings.NewReader(""), &out, &errb)
		cancel()
		r := cliResult{out.String(), errb.String(), err}
		wantExit(t, r, 130)
		if !strings.Contains(r.stderr, "the order may be recorded and run all the same") || !strings.Contains(r.stderr, tc.hint) {
			t.Errorf("key %q: stderr %q, want it to say the order may run and %q", tc.key, r.stderr, tc.hint)
		}
		if n := s.countOrders(t, marker); n != 1 {
			t.Errorf("key %q: %d orders, want 1", tc.key, n)
		}
	}
}

// TestCLISubmitSaysItWasReplayed: a command run again with the same
// --idempotency-key is answered with the order the key recorded, and
// printed it (a finished order's output) as if it had just run; stderr
// now says so. A fan-out that reaches a host more says on which hosts
// its orders are the recorded ones.
func TestCLISubmitSaysItWasReplayed(t *testing.T) {
	s := newStack(t, "h1", "h2")
	env := []string{"ORDERLY_URL=" + s.url, "ORDERLY_TOKEN=" + s.token}
	run := func(args ...string) cliResult {
		t.Helper()
		r := cli(t, env, "", args...)
		wantExit(t, r, 0)
		return r
	}
	first := run("submit", "--host", "h1", "--wait", "--idempotency-key", "again-1", "--", "echo", "replay-note")
	if strings.Contains(first.stderr, "was used before") {
		t.Fatalf("the first submission's stderr: %q", first.stderr)
	}
	again := run("submit", "--host", "h1", "--wait", "--idempotency-key", "again-1", "--", "echo", "replay-note")
	if again.stdout != "replay-note\n" || !strings.Contains(again.stderr, `--idempotency-key "again-1" was used before for this request: this is the order it recorded`) ||
		!strings.Contains(again.stderr, "nothing new runs") {
		t.Fatalf("the submission run again: stdout %q, stderr %q", again.stdout, again.stderr)
	}
	if n := s.countOrders(t, "replay-note"); n != 1 {
		t.Fatalf("%d orders, want 1", n)
	}

	run("submit", "--hosts", "h1", "--wait", "--idempotency-key", "again-fan", "--", "echo", "replay-fan")
	wider := run("submit", "--hosts", "h1,h2", "--wait", "--idempotency-key", "again-fan", "--", "echo", "replay-fan")
	if !strings.Contains(wider.stderr, "on h1 the orders are the ones it recorded") || !strings.Contains(wider.stderr, "1 other host(s) got a new order") {
		t.Fatalf("the fan-out to a host more: stderr %q", wider.stderr)
	}
	whole := run("submit", "--hosts", "h1,h2", "--idempotency-key", "again-fan", "--", "echo", "replay-fan")
	if !strings.Contains(whole.stderr, "these are the orders it recorded") {
		t.Fatalf("the fan-out retried whole: stderr %q", whole.stderr)
	}
	if n := s.countOrders(t, "replay-fan"); n != 2 {
		t.Fatalf("%d fan-out orders, want 2", n)
	}
}

// TestCLIFanOutWaitReadsTheBatch: `orderly submit --hosts … --wait`
// polled every pending order one by one each round (a fan-out to 1,000
// hosts: 1,000 requests a round); it now reads the batch without
// outputs, conditionally, and each order once, when it has finished.
func TestCLIFanOutWaitReadsTheBatch(t *testing.T) {
	s := newStack(t, "h1", "h2")
	target, err := url.Parse(s.url)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	var orderReads, batchReads atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/orders/") && strings.Count(r.URL.Path, "/") == 3 {
			orderReads.Add(1)
		}
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/batches/") {
			batchReads.Add(1)
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	r := cli(t, []string{"ORDERLY_URL=" + srv.URL, "ORDERLY_TOKEN=" + s.token}, "",
		"submit", "--hosts", "h1,h2", "--wait", "--", "sh", "-c", "sleep 2; echo batch-wait")
	wantExit(t, r, 0)
	if !strings.Contains(r.stdout, "h1: batch-wait") || !strings.Contains(r.stdout, "h2: batch-wait") {
		t.Fatalf("stdout %q", r.stdout)
	}
	if n := orderReads.Load(); n > 2 {
		t.Errorf("%d reads of single orders while waiting for two (batch read %d times), want one each once finished", n, batchReads.Load())
	}
	if batchReads.Load() == 0 {
		t.Error("the batch was never read")
	}
}
