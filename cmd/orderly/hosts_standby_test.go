package main

import (
	"net"
	"path/filepath"
	"regexp"
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

// TestWorkerStatusForSystemd: under systemd (NOTIFY_SOCKET) a worker's
// STATUS says whether it consumes its host's orders or stands by, and for
// whom. It said "reached nats" (the last dependency its start waited for),
// or nothing, for the life of the service.
func TestWorkerStatusForSystemd(t *testing.T) {
	sock := filepath.Join(shortDir(t, "osn-", false), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	s := newStack(t)
	// until reads the notifications until one is want.
	until := func(want string) {
		t.Helper()
		if err := conn.SetReadDeadline(time.Now().Add(15 * time.Second)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		var got []string
		for {
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("no %q on NOTIFY_SOCKET (got %q): %v", want, got, err)
			}
			if msg := string(buf[:n]); msg != want {
				got = append(got, msg)
				continue
			}
			return
		}
	}
	s.startWorker("h1")
	until("STATUS=consuming the orders of host h1")
	cfg := s.watcher.Current()
	cfg.Host = "h1"
	sb, err := startWorker(t.Context(), cfg, s.b, testenv.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sb.stop() }()
	msg := regexp.MustCompile(`^STATUS=standby: the lease of host h1 is held by h1/[0-9a-f-]+$`)
	if err := conn.SetReadDeadline(time.Now().Add(15 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil || !msg.Match(buf[:n]) {
		t.Fatalf("the standby's notification %q, %v; want %s", buf[:n], err, msg)
	}
	s.stopWorker("h1")
	until("STATUS=consuming the orders of host h1")
}
