package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
)

// TestThawedHolderLeavesTheNewHoldersHeartbeat runs two `orderly worker`
// processes for one host and freezes (SIGSTOP) the holder the moment its
// lease renewal reaches NATS, before the heartbeat that follows it, until
// the standby has taken the host over and beaten; then thaws it. The
// thawed worker wrote that heartbeat over its successor's, so the hosts
// listing named the wrong worker as the host's; it must stand by instead,
// writing nothing under the host's heartbeat. Roles swap every round; a
// freeze that lands after the heartbeat proves nothing and is tried
// again, up to a bound.
func TestThawedHolderLeavesTheNewHoldersHeartbeat(t *testing.T) {
	s := newStack(t)
	ctx := t.Context()
	kv, err := s.b.queue.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	const host = "thaw"
	start := func() *exec.Cmd {
		cmd := exec.Command(orderlyBin, "worker", "--host", host)
		cmd.Env = []string{"ORDERLY_DATABASE_URL=" + s.dsn, "ORDERLY_NATS__URL=" + s.natsURL,
			"ORDERLY_NATS__LEASE_TTL=2s", "ORDERLY_NATS__HEARTBEAT=300ms", "ORDERLY_LOG__LEVEL=warn", "PATH=/usr/bin:/bin"}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGCONT)
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		})
		return cmd
	}
	// value waits until key holds a value that passes ok, and returns it.
	value := func(key string, ok func(queue.HostInfo, string) bool) (string, uint64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if e, err := kv.Get(ctx, key); err == nil {
				var h queue.HostInfo
				_ = json.Unmarshal(e.Value(), &h)
				if ok(h, string(e.Value())) {
					return string(e.Value()), e.Revision()
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("%s never got the value awaited", key)
		return "", 0
	}
	procs := map[string]*exec.Cmd{}
	a := start()
	instA, _ := value("lease."+host, func(queue.HostInfo, string) bool { return true })
	procs[instA] = a
	b := start()
	sb, _ := value("standby."+host, func(h queue.HostInfo, _ string) bool { return h.Instance != instA })
	var instB queue.HostInfo
	_ = json.Unmarshal([]byte(sb), &instB)
	procs[instB.Instance] = b

	// Every heartbeat written from now on, in order.
	type beat struct {
		rev      uint64
		instance string
	}
	var mu sync.Mutex
	var beats []beat
	iw, err := kv.Watch(ctx, "info."+host, jetstream.UpdatesOnly(), jetstream.IgnoreDeletes())
	if err != nil {
		t.Fatal(err)
	}
	defer iw.Stop()
	go func() {
		for e := range iw.Updates() {
			if e == nil {
				continue
			}
			var h queue.HostInfo
			_ = json.Unmarshal(e.Value(), &h)
			mu.Lock()
			beats = append(beats, beat{e.Revision(), h.Instance})
			mu.Unlock()
		}
	}()

	holder, standby := instA, instB.Instance
	hits := 0
	for round := 0; round < 12 && hits < 2; round++ {
		lw, err := kv.Watch(ctx, "lease."+host, jetstream.UpdatesOnly())
		if err != nil {
			t.Fatal(err)
		}
		var renewed uint64
		for e := range lw.Updates() {
			if e != nil && string(e.Value()) == holder {
				_ = procs[holder].Process.Signal(syscall.SIGSTOP)
				renewed = e.Revision()
				break
			}
		}
		lw.Stop()
		// The standby takes the host over and beats.
		value("lease."+host, func(_ queue.HostInfo, v string) bool { return v == standby })
		_, first := value("info."+host, func(h queue.HostInfo, _ string) bool { return h.Instance == standby })
		if err := procs[holder].Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		// Thawed, it stands by: whatever it wrote as the holder is written.
		value("standby."+host, func(h queue.HostInfo, _ string) bool { return h.Instance == holder })
		mu.Lock()
		hit := true
		for _, b := range beats {
			if b.instance == holder && b.rev > renewed && b.rev < first {
				hit = false // its heartbeat went before the freeze
			}
			if b.instance == holder && b.rev > first {
				t.Errorf("round %d: the thawed worker %s wrote the host's heartbeat (revision %d) after its successor %s took the host over (revision %d)",
					round, holder, b.rev, standby, first)
			}
		}
		mu.Unlock()
		t.Logf("round %d: frozen between renewal and heartbeat: %v", round, hit)
		if hit {
			hits++
		}
		holder, standby = standby, holder
	}
	if hits == 0 {
		t.Fatal("no freeze landed between a renewal and its heartbeat: the test proved nothing")
	}
}
