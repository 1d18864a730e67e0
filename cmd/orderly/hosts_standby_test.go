package main

import (
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/testenv"
)

// TestCLIHostsShowStandby: a second worker of a host waits as its
// standby; `orderly hosts` says a standby is there, `orderly hosts H`
// names it and orderly_host_standby is 1, and all of them forget it once
// it stops.
func TestCLIHostsShowStandby(t *testing.T) {
	s := newStack(t, "h1")
	env := s.cliEnv()
	cfg := s.watcher.Current()
	cfg.Host = "h1"
	sb, err := startWorker(t.Context(), cfg, s.b, testenv.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = sb.stop()
		}
	}()
	// until runs `orderly hosts` until the listing of h1 matches line and
	// the host's own view passes check.
	until := func(what, line string, check func(string) bool, gauge string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			list := cli(t, env, "", "hosts")
			one := cli(t, env, "", "hosts", "h1")
			wantExit(t, list, 0)
			wantExit(t, one, 0)
			code, metrics := s.do("GET", "/metrics", nil)
			if code != 200 {
				t.Fatalf("metrics: %d %s", code, metrics)
			}
			if regexpLine(list.stdout, line) && check(one.stdout) && strings.Contains(string(metrics), gauge+"\n") {
				if !strings.Contains(list.stdout, "STANDBY") {
					t.Fatalf("no STANDBY column:\n%s", list.stdout)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: hosts:\n%s\nhosts h1:\n%s\nno %s in the metrics", what, list.stdout, one.stdout, gauge)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	until("a standby waits", `^h1\s+yes\s+yes\s`, func(out string) bool {
		return regexpLine(out, `^Standby:\s+h1/\S+ \(version \S+, started waiting .*ago\)$`)
	}, `orderly_host_standby{host="h1"} 1`)
	_ = sb.stop()
	stopped = true
	until("the standby stopped", `^h1\s+yes\s+-\s`, func(out string) bool {
		return regexpLine(out, `^Standby:\s+-$`)
	}, `orderly_host_standby{host="h1"} 0`)
}
