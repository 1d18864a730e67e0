package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestWorkerReachesNATSWhilePostgresDoesNotAnswerYet: a worker's start
// reached PostgreSQL, then NATS, one after the other, though neither
// needs the other; with a whole fleet's workers started at once on a
// loaded machine each took up to a second (TestFaultsFleet, every worker
// SIGKILLed, docs/decisions.md, hE29). Now they are reached side by
// side: here PostgreSQL refuses every connection (nothing listens), and
// the start connects to NATS meanwhile, while it still waits for
// PostgreSQL. Stopped then, the start says it stopped waiting for
// PostgreSQL.
func TestWorkerReachesNATSWhilePostgresDoesNotAnswerYet(t *testing.T) {
	cfg := config.Default()
	cfg.Host = "overlap"
	// Nothing listens on port 1 of the loopback: refused at once, and
	// waited for.
	cfg.DatabaseURL = "postgres://orderly@127.0.0.1:1/orderly"
	cfg.NATS.URL = testenv.NATS(t)
	connected := make(chan struct{})
	var once sync.Once
	backendNATSConnected = func(*nats.Conn) { once.Do(func() { close(connected) }) }
	defer func() { backendNATSConnected = nil }()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out testenv.LogBuffer
	done := make(chan error, 1)
	go func() {
		b, err := openBackendWith(ctx, cfg, "orderly-worker-overlap", roleWorker, waitForDependencies(testenv.LoggerTo(&out)), testenv.LoggerTo(&out))
		if err == nil {
			b.close()
		}
		done <- err
	}()
	select {
	case <-connected:
	case err := <-done:
		t.Fatalf("the start ended before it connected to NATS: %v\n%s", err, out.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("the start did not connect to NATS while PostgreSQL refused its connections (it waits for PostgreSQL first):\n%s", out.String())
	}
	cancel()
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "stopped while waiting for postgresql") {
		t.Fatalf("the start stopped with %v, want it stopped while waiting for postgresql", err)
	}
}
