package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
)

// lockedBuffer is a bytes.Buffer that a process's output and the test
// share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestStandbyTakesOverOnTheLeasesExpiry runs two `orderly worker`
// processes for one host and freezes the holder (SIGSTOP): to the standby
// it is what a holder on another machine that died is, a process it
// cannot see end (one that exits on its own machine it takes at once:
// TestStandbyTakesTheHostOfAHolderThatDiesAtOnce). The standby takes the
// host over at the lease's expiry (`freed=expired` in its log: a
// lease after the last renewal it saw, the hosts bucket having no expiry
// markers since it takes no rollups), not at its next periodic try of
// the key, which left the host offline up to a quarter lease longer. The
// times are logged, taken from a watch on the hosts bucket: from the
// kill, and from the dead worker's heartbeat expiry (its marker on a
// bucket with markers, else a lease after the watch saw it) to the
// standby's first heartbeat (the host offline).
func TestStandbyTakesOverOnTheLeasesExpiry(t *testing.T) {
	s := newStack(t)
	ctx := t.Context()
	kv, err := s.b.queue.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	const host = "marker"
	start := func(log *lockedBuffer) *exec.Cmd {
		cmd := exec.Command(orderlyBin, "worker", "--host", host)
		cmd.Env = []string{"ORDERLY_DATABASE_URL=" + s.dsn, "ORDERLY_NATS__URL=" + s.natsURL,
			"ORDERLY_NATS__LEASE_TTL=2s", "ORDERLY_NATS__HEARTBEAT=300ms", "ORDERLY_LOG__LEVEL=info", "PATH=/usr/bin:/bin"}
		cmd.Stderr = log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		})
		return cmd
	}
	type event struct {
		at  time.Time
		key string
		op  jetstream.KeyValueOp
		who string
	}
	events := make(chan event, 1000)
	w, err := kv.Watch(ctx, "*."+host, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	go func() {
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			who := string(e.Value())
			var h queue.HostInfo
			if json.Unmarshal(e.Value(), &h) == nil {
				who = h.Instance
			}
			events <- event{time.Now(), e.Key(), e.Operation(), who}
		}
	}()
	// next returns the next event that passes ok.
	next := func(what string, ok func(event) bool) event {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case e := <-events:
				if ok(e) {
					return e
				}
			case <-deadline:
				t.Fatalf("no %s", what)
			}
		}
	}
	var logA, logB lockedBuffer
	a := start(&logA)
	holder := next("lease of the first worker", func(e event) bool { return e.key == "lease."+host && e.op == jetstream.KeyValuePut }).who
	start(&logB)
	next("standby report", func(e event) bool { return e.key == "standby."+host && e.op == jetstream.KeyValuePut })
	// Frozen right after a heartbeat, where a crash most likely lands:
	// between a heartbeat and the next renewal, a heartbeat interval.
	beat := next("heartbeat", func(e event) bool { return e.key == "info."+host && e.op == jetstream.KeyValuePut && e.who == holder })
	if err := a.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	t.Cleanup(func() { _ = a.Process.Kill() }) // before start's SIGTERM and wait: a frozen process acts on neither
	var offline, expired time.Time
	var taken event
	for taken.who == "" {
		e := next("takeover", func(event) bool { return true })
		switch {
		case e.key == "info."+host && e.op != jetstream.KeyValuePut && offline.IsZero():
			offline = e.at
		case e.key == "lease."+host && e.op != jetstream.KeyValuePut:
			expired = e.at
		case e.key == "lease."+host && e.op == jetstream.KeyValuePut && e.who != holder:
			taken = e
		}
	}
	online := next("the new holder's heartbeat", func(e event) bool {
		return e.key == "info."+host && e.op == jetstream.KeyValuePut && e.who != holder
	})
	if offline.IsZero() { // no marker: a lease after the heartbeat was seen
		offline = beat.at.Add(2 * time.Second)
	}
	gap := online.at.Sub(offline) // the host offline
	marker := "none"
	if !expired.IsZero() {
		marker = expired.Sub(killed).String()
	}
	t.Logf("frozen -> lease expiry marker %s, -> lease taken %v, -> new heartbeat %v; host offline (from the dead heartbeat's expiry) %v",
		marker, taken.at.Sub(killed), online.at.Sub(killed), gap)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logB.String(), "host lease taken after waiting as standby") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logB.String(), "freed=expired") {
		t.Fatalf("the standby did not take the host on its lease's expiry marker; its log:\n%s", logB.String())
	}
}
