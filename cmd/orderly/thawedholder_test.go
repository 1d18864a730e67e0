package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
)

// TestThawedHolderLeavesTheNewHoldersHeartbeat runs two `orderly worker`
// processes for one host and freezes (SIGSTOP) the holder the moment its
// lease renewal reaches NATS, with its next heartbeat to come, until the
// standby has taken the host over and beaten; then thaws it. The thawed
// worker wrote its heartbeat over its successor's, so the hosts listing
// named the wrong worker as the host's; it must stand by instead,
// writing nothing under the host's heartbeat. Roles swap every round.
//
// Each worker reaches NATS through its own proxy, which stops the worker
// when the renewal's bytes pass and only then forwards them. (A freeze
// sent when a watcher saw the renewal raced the worker's own writes, and
// on a loaded machine lost all twelve rounds.) Until hC26 the worker beat
// only after the renewal's answer, so the freeze landed between the two;
// its heartbeat now has a goroutine of its own.
// The proxy forwards only once every thread of the worker is stopped: a
// SIGSTOP stops a process's threads one after another, and on a loaded
// machine a thread still running read the answer and beat.
func TestThawedHolderLeavesTheNewHoldersHeartbeat(t *testing.T) {
	s := newStack(t)
	ctx := t.Context()
	kv, err := s.b.queue.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	const host = "thaw"
	renewal := []byte("PUB $KV." + queue.HostsBucket + ".lease." + host + " ")
	proxies := map[string]*freezeProxy{}
	start := func() (*exec.Cmd, *freezeProxy) {
		p := newFreezeProxy(t, strings.TrimPrefix(s.natsURL, "nats://"), renewal)
		cmd := exec.Command(orderlyBin, "worker", "--host", host)
		cmd.Env = []string{"ORDERLY_DATABASE_URL=" + s.dsn, "ORDERLY_NATS__URL=nats://" + p.addr(),
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
		return cmd, p
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
	a, pa := start()
	instA, _ := value("lease."+host, func(queue.HostInfo, string) bool { return true })
	procs[instA], proxies[instA] = a, pa
	b, pb := start()
	sb, _ := value("standby."+host, func(h queue.HostInfo, _ string) bool { return h.Instance != instA })
	var instB queue.HostInfo
	_ = json.Unmarshal([]byte(sb), &instB)
	procs[instB.Instance], proxies[instB.Instance] = b, pb

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
	// A round counts when the holder was stopped by its proxy at a
	// renewal of its live lease. Since the heartbeat is written by a
	// goroutine of its own, beside the renewals (docs/decisions.md,
	// hC26), no beat follows a renewal in sequence: the heartbeat of the
	// renewal's tick mostly reaches the server just before the stop, and
	// the thawed worker's next one is the write under test. One whose
	// holder lost its lease in a stall of its own first (the machine's,
	// not the proxy's: its trigger never ran) tests the thawed worker all
	// the same but not a live lease's stop, and is not counted.
	counted := 0
	for round := 0; counted < 4; round++ {
		if round == 12 {
			t.Fatalf("only %d of %d rounds stopped the holder at a renewal of its live lease", counted, round)
		}
		lw, err := kv.Watch(ctx, "lease."+host, jetstream.UpdatesOnly())
		if err != nil {
			t.Fatal(err)
		}
		// The holder's next write under its lease is a renewal: it is
		// stopped as the renewal passes its proxy.
		proc := procs[holder].Process
		proxies[holder].arm(func() { stopProcess(t, proc.Pid) })
		// The holder's lease writes until the standby takes the host
		// over: the last is the renewal it was stopped at. (The first
		// may be one that passed the proxy before it was armed, and
		// reached the server after the watch began.)
		var renewed uint64
		deadline := time.After(60 * time.Second)
	watch:
		for {
			select {
			case e, ok := <-lw.Updates():
				if !ok {
					t.Fatal("the lease's watch ended")
				}
				if e == nil {
					continue
				}
				switch string(e.Value()) {
				case holder:
					renewed = e.Revision()
				case standby:
					break watch
				}
			case <-deadline:
				t.Fatalf("round %d: %s never took the host over", round, standby)
			}
		}
		lw.Stop()
		// The standby beats; then the holder is thawed (a trigger that
		// ran late, on the renewal of a holder woken from a stall of its
		// own, is thawed too).
		_, first := value("info."+host, func(h queue.HostInfo, _ string) bool { return h.Instance == standby })
		froze := proxies[holder].disarm()
		if err := proc.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		// Thawed, it stands by: whatever it wrote as the holder is written.
		value("standby."+host, func(h queue.HostInfo, _ string) bool { return h.Instance == holder })
		beatBetween := uint64(0)
		mu.Lock()
		for _, b := range beats {
			if b.instance == holder && b.rev > renewed && b.rev < first {
				beatBetween = b.rev
			}
			if b.instance == holder && b.rev > first {
				t.Errorf("round %d: the thawed worker %s wrote the host's heartbeat (revision %d) after its successor %s took the host over (revision %d)",
					round, holder, b.rev, standby, first)
			}
		}
		mu.Unlock()
		if froze && renewed != 0 {
			counted++
		} else {
			t.Logf("round %d not counted: %s stopped by its proxy %t, renewed at revision %d, beat at %d before %s took over (revision %d)",
				round, holder, froze, renewed, beatBetween, standby, first)
		}
		holder, standby = standby, holder
	}
}

// stopProcess sends pid SIGSTOP and returns once every thread of it is
// stopped. A group stop is not done when kill returns: the one thread the
// signal wakes stops the others, and until the scheduler runs it they run
// on (on a loaded machine, long enough to read the renewal's answer and
// beat).
func stopProcess(t *testing.T, pid int) {
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Errorf("stop %d: %v", pid, err)
		return
	}
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
		tasks, err := os.ReadDir(dir)
		stopped := err == nil
		for _, task := range tasks {
			b, err := os.ReadFile(dir + "/" + task.Name() + "/stat")
			if err != nil {
				continue // exited meanwhile
			}
			if f := bytes.Fields(b[bytes.LastIndexByte(b, ')')+1:]); len(f) == 0 || !bytes.ContainsAny(f[0], "TtZX") {
				stopped = false
				break
			}
		}
		if stopped {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("process %d not stopped a minute after SIGSTOP (%v)", pid, err)
			return
		}
	}
}

// freezeProxy forwards a worker's NATS connections and, once armed, calls
// its trigger the first time the worker sends pattern, before forwarding
// the bytes that hold it.
type freezeProxy struct {
	t       *testing.T
	target  string
	pattern []byte
	ln      net.Listener
	mu      sync.Mutex
	trigger func()
}

func newFreezeProxy(t *testing.T, target string, pattern []byte) *freezeProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{t: t, target: target, pattern: pattern, ln: ln}
	t.Cleanup(func() { _ = ln.Close() })
	go p.serve()
	return p
}

func (p *freezeProxy) addr() string { return p.ln.Addr().String() }

func (p *freezeProxy) arm(trigger func()) {
	p.mu.Lock()
	p.trigger = trigger
	p.mu.Unlock()
}

// disarm drops the trigger and reports whether it ran.
func (p *freezeProxy) disarm() (ran bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ran = p.trigger == nil
	p.trigger = nil
	return ran
}

func (p *freezeProxy) serve() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		p.t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
		go func() { _, _ = io.Copy(client, server); _ = client.Close() }()
		go p.up(client, server)
	}
}

// up copies the worker's bytes to NATS, looking for the pattern across
// reads (the tail of each read is kept to be searched with the next).
func (p *freezeProxy) up(client, server net.Conn) {
	defer server.Close()
	buf := make([]byte, 32<<10)
	var tail []byte
	for {
		n, err := client.Read(buf)
		if n > 0 {
			seen := append(tail, buf[:n]...)
			if bytes.Contains(seen, p.pattern) {
				p.mu.Lock()
				trigger := p.trigger
				p.trigger = nil
				p.mu.Unlock()
				if trigger != nil {
					trigger()
				}
			}
			tail = append([]byte(nil), seen[max(0, len(seen)-len(p.pattern)+1):]...)
			if _, werr := server.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
