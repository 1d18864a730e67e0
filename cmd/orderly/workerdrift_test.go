package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStandaloneWorkerReportsDrift: docs/config.md says a running service
// logs a warning when its file changes on disk without a reload, and
// deploy.md that the Kubernetes workers report an edited ConfigMap as
// drift. Only the API ran the drift check: a standalone worker said
// nothing and went on with its old host policy, the edit unnoticed.
func TestStandaloneWorkerReportsDrift(t *testing.T) {
	s := newStack(t)
	dir := shortDir(t, "wd-", false)
	conf := filepath.Join(dir, "worker.yaml")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("config_check_interval: 100ms\nworker:\n  deny: []\n")
	env := []string{"ORDERLY_DATABASE_URL=" + s.dsn, "ORDERLY_NATS__URL=" + s.natsURL,
		"ORDERLY_NATS__LEASE_TTL=2s", "ORDERLY_NATS__HEARTBEAT=300ms", "PATH=/usr/bin:/bin", "HOME=" + dir}
	p := startFaultProc(t, "worker", filepath.Join(dir, "worker.log"), env, orderlyBin,
		"worker", "--config", conf, "--host", "wd")
	waitLogLine(t, p, "worker consuming", 30*time.Second)
	write("config_check_interval: 100ms\nworker:\n  deny: ['^rm ']\n")
	waitLogLine(t, p, "config drift", 10*time.Second)
}

// TestStandaloneWorkerRefusalSaysRestart: a standalone worker refuses a
// reload that drops its containment, as config.md says, and a restart
// applies such a file: it has no API. Its drift line and its refusal
// said "confirm it with POST /v1/admin/reload?confirm=…", a route no
// worker serves.
func TestStandaloneWorkerRefusalSaysRestart(t *testing.T) {
	s := newStack(t)
	dir := shortDir(t, "wr-", false)
	conf := filepath.Join(dir, "worker.yaml")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("config_check_interval: 100ms\nworker:\n  exec_root: /usr\n  command_path: [/usr/bin]\n")
	env := []string{"ORDERLY_DATABASE_URL=" + s.dsn, "ORDERLY_NATS__URL=" + s.natsURL,
		"ORDERLY_NATS__LEASE_TTL=2s", "ORDERLY_NATS__HEARTBEAT=300ms", "PATH=/usr/bin:/bin", "HOME=" + dir}
	p := startFaultProc(t, "worker", filepath.Join(dir, "worker.log"), env, orderlyBin,
		"worker", "--config", conf, "--host", "wr")
	waitLogLine(t, p, "worker consuming", 30*time.Second)
	write("config_check_interval: 100ms\nworker:\n  command_path: [/usr/bin]\n")
	waitLogLine(t, p, "config drift", 10*time.Second)
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLogLine(t, p, "reload refused", 10*time.Second)
	log := readLog(p)
	if strings.Count(log, "restart it to apply the file") < 2 || strings.Contains(log, "/v1/admin/reload") {
		t.Fatalf("the worker's drift line and refusal should say to restart, naming no route:\n%s", log)
	}
}
