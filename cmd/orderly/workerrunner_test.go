package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"
)

// TestWorkerThatEndsByItselfStillStops: when a worker's Run returns on
// its own, waitForSignals returns its error, and the stop deferred by the
// server command must then return too, with the same error. The runner
// handed Run's error over once, on a channel waitForSignals read, and the
// stop after it waited for good.
func TestWorkerThatEndsByItselfStillStops(t *testing.T) {
	boom := errors.New("boom")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stopped := make(chan struct{})
	r := runWorker(ctx, cancel, func(context.Context) error { return boom }, func() { close(stopped) })

	a := &app{hup: make(chan os.Signal, 1)}
	err := a.waitForSignals(t.Context(), nopReloader{}, slog.New(slog.NewTextHandler(io.Discard, nil)), r, nil)
	if !errors.Is(err, boom) {
		t.Fatalf("waitForSignals returned %v, want the worker's %v", err, boom)
	}
	<-stopped
	got := make(chan error, 1)
	go func() { got <- r.stop() }()
	select {
	case err := <-got:
		if !errors.Is(err, boom) {
			t.Fatalf("stop returned %v, want the worker's %v", err, boom)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stop did not return after the worker ended by itself")
	}
}

type nopReloader struct{}

func (nopReloader) Reload() (bool, error) { return false, nil }
