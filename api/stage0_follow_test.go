package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestStage0KeepsARunItCouldNotFollow: stage0's execute cancels a queued
// run whose client went away, since nobody would learn of it. It also
// canceled one when the server could not open the run's live output (an
// internal failure, the client still there): a run the client asked for
// and may find again was thrown away. Then only a client that left
// canceled it, and the failure cut the stream with the run still queued;
// since hE21 the follow goes on without its live output (its poll), so
// the run stays queued while no worker takes it, and once one does, the
// client gets its whole stream, done included.
func TestStage0KeepsARunItCouldNotFollow(t *testing.T) {
	e := newAPIEnv(t, envOptions{}) // no worker: the run stays queued
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Q.md"), []byte(stage0Runbook("Q", "{}", "", "echo hi")), 0o644); err != nil {
		t.Fatal(err)
	}
	rb := e.stage0Server(dir)
	code, b := rb.do("", "POST", "/dev-login", map[string]any{"subject": "boss", "roles": []string{"admin"}})
	var login struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(b, &login); code != http.StatusOK || err != nil {
		t.Fatalf("dev-login: %d %s", code, b)
	}

	// The live output cannot be opened: its stream takes no more
	// consumers (a stream that is gone is made again by the API's
	// follow: hA16).
	nc, err := nats.Connect(e.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	live, err := js.Stream(t.Context(), queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := live.CachedInfo().Config
	if err := js.DeleteStream(t.Context(), queue.LiveStream); err != nil {
		t.Fatal(err)
	}
	cfg.MaxConsumers = 1
	full, err := js.CreateStream(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := full.CreateConsumer(t.Context(), jetstream.ConsumerConfig{Durable: "taken"}); err != nil {
		t.Fatal(err)
	}

	req, _ := http.NewRequestWithContext(t.Context(), "POST", rb.url+"/api/runbooks/Q.md/execute", bytes.NewReader([]byte(`{}`)))
	req.Header.Set("Authorization", "Bearer "+login.AccessToken)
	req.Header.Set("Content-Type", "application/json")
	type answer struct {
		code int
		body []byte
		err  error
	}
	answered := make(chan answer, 1)
	go func() {
		resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
		if err != nil {
			answered <- answer{err: err}
			return
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		answered <- answer{resp.StatusCode, body, err}
	}()
	status := func() string {
		var st string
		if err := e.pool.QueryRow(t.Context(), `SELECT status FROM orders WHERE runbook = 'Q.md'`).Scan(&st); err != nil {
			return ""
		}
		return st
	}
	// The run recorded: its follow began (and, before, ended at once).
	testenv.WaitUntil(t, time.Minute, "the run recorded", func() bool { return status() != "" })
	if st := status(); st != "queued" {
		t.Fatalf("the run is %q, want queued", st)
	}

	e.startWorker("h1")
	var a answer
	select {
	case a = <-answered:
	case <-time.After(time.Minute):
		t.Fatal("execute not answered within a minute of a worker for its run")
	}
	if a.err != nil || a.code != http.StatusOK || !bytes.Contains(a.body, []byte("event: done")) || !bytes.Contains(a.body, []byte(`"stdout": "hi\n"`)) {
		t.Fatalf("execute: %d %q (%v); want the run's whole stream, done included", a.code, a.body, a.err)
	}
	if st := status(); st != "succeeded" {
		t.Fatalf("the run is %q, want succeeded", st)
	}
}
