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
)

// TestStage0KeepsARunItCouldNotFollow: stage0's execute cancels a queued
// run whose client went away, since nobody would learn of it. It also
// canceled one when the server could not open the run's live output (an
// internal failure, the client still there): a run the client asked for
// and may find again was thrown away. Now only a client that left cancels
// it; the failure cuts the stream, and the run stays queued.
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
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req) // a follow that goes on would wait for a worker there is none of
	if err != nil {
		t.Fatal(err)
	}
	body, readErr := io.ReadAll(resp.Body)
	resp.Body.Close()
	var status string
	if err := e.pool.QueryRow(t.Context(), `SELECT status FROM orders WHERE runbook = 'Q.md'`).Scan(&status); err != nil || status != "queued" {
		t.Fatalf("the run is %q (%v), want still queued", status, err)
	}
	if resp.StatusCode != http.StatusOK || readErr == nil || bytes.Contains(body, []byte("event: done")) {
		t.Fatalf("execute: %d %q (read: %v); want a stream cut before done", resp.StatusCode, body, readErr)
	}
}
