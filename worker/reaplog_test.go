package worker_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
	"github.com/orderly-run/orderly/worker/executor"
)

// TestReapLogNamesTheOrder checks that when a successor kills what a dead
// worker's order left running, its log line names that order: an operator
// reading "killed a previous order's leftover processes" must be able to
// tell whose they were.
func TestReapLogNamesTheOrder(t *testing.T) {
	e := newEnv(t)
	const host, dead = "reap-log", "reap-log/dead"
	// The dead worker's order: a process leading its own group, still
	// running after its worker is gone.
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := cmd.Process.Pid
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command's ")": state is the first, starttime the 20th.
	start, err := strconv.ParseUint(string(bytes.Fields(stat[bytes.LastIndexByte(stat, ')')+1:])[19]), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	boot, err := executor.CurrentBootID()
	if err != nil {
		t.Fatal(err)
	}
	id := e.submit(host, "sleep", "60")
	if _, _, err := e.store.TakeHost(t.Context(), host, "test", postgres.Owner{Instance: dead}); err != nil {
		t.Fatal(err)
	}
	if _, claimed, err := e.store.Claim(t.Context(), id, dead, 1); err != nil || !claimed {
		t.Fatalf("claim as the dead worker: %v %v", claimed, err)
	}
	if err := e.store.RecordProcess(t.Context(), id, 1, dead, postgres.Process{PID: pid, PGID: pid, StartTime: start, BootID: boot}); err != nil {
		t.Fatal(err)
	}

	logs := &testenv.LogBuffer{}
	runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, e.store, e.q, slog.New(slog.NewJSONHandler(logs, nil)))
	e.waitStatus(id, order.StatusInterrupted)
	var line map[string]any
	testenv.WaitUntil(t, 10*time.Second, "the reap's log line", func() bool {
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		for sc.Scan() {
			var l map[string]any
			if json.Unmarshal(sc.Bytes(), &l) == nil && l["msg"] == "killed a previous order's leftover processes" {
				line = l
				return true
			}
		}
		return false
	})
	if line["order_id"] != id.String() {
		t.Errorf("the reap's line does not name order %s: %v", id, line)
	}
}
