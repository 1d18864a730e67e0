package worker_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/worker"
	"github.com/orderly-run/orderly/worker/executor"
	"github.com/orderly-run/orderly/worker/hostpolicy"
)

// runWorker runs a worker with opts, the default host policy and a real
// executor until the test ends or stop is called; done yields its Run
// error. The tests differ only in the options, the store and the queue.
func runWorker(t testing.TB, opts worker.Options, store worker.Store, q *queue.Queue, logger *slog.Logger) (stop func(), done <-chan error) {
	t.Helper()
	hp, err := hostpolicy.New(config.Default().Worker)
	if err != nil {
		t.Fatal(err)
	}
	return runWorkerPolicy(t, opts, store, q, hp, logger)
}

// runWorkerPolicy is runWorker with the host policy hp.
func runWorkerPolicy(t testing.TB, opts worker.Options, store worker.Store, q *queue.Queue, hp *hostpolicy.Policy, logger *slog.Logger) (stop func(), done <-chan error) {
	t.Helper()
	return runWorkerRunner(t, opts, store, q, hp, executor.New(logger), logger)
}

// runWorkerRunner is runWorkerPolicy with the runner r.
func runWorkerRunner(t testing.TB, opts worker.Options, store worker.Store, q *queue.Queue, hp *hostpolicy.Policy, r worker.Runner, logger *slog.Logger) (stop func(), done <-chan error) {
	t.Helper()
	w := worker.New(opts, store, q, hp, r, logger)
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	fin := make(chan struct{})
	go func() {
		ch <- w.Run(ctx)
		close(fin)
	}()
	name := "worker"
	if opts.Instance != "" {
		name += " " + opts.Instance
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			select {
			case <-fin:
			case <-time.After(20 * time.Second):
				t.Errorf("%s did not stop", name)
			}
		}
	}
	t.Cleanup(stop)
	return stop, ch
}
