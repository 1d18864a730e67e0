package main

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/testenv"
)

// TestWorkerLogsItsContainment: with worker.cgroup auto the worker says at
// start whether orders get their own cgroups or, without a delegated one,
// only process groups and why (docs/config.md); switched off, it says
// nothing.
func TestWorkerLogsItsContainment(t *testing.T) {
	s := newStack(t)
	for _, c := range []struct {
		host, setting string
		logged        bool
	}{{"cg-auto", "auto", true}, {"cg-off", "", false}} {
		cfg := s.watcher.Current()
		cfg.Host, cfg.Worker.Cgroup = c.host, c.setting
		var logs testenv.LogBuffer
		wr, err := startWorker(t.Context(), cfg, s.b, slog.New(slog.NewTextHandler(&logs, nil)), nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = wr.stop()
		own := strings.Contains(logs.String(), `msg="orders run in their own cgroups"`)
		groups := strings.Contains(logs.String(), `msg="orders run in process groups only"`) &&
			strings.Contains(logs.String(), "reason=")
		if c.logged != (own || groups) || own && groups {
			t.Errorf("worker.cgroup %q: own cgroups logged %v, process groups logged %v\n%s", c.setting, own, groups, logs.String())
		}
	}
}
