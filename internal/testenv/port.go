package testenv

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// FreePort returns a loopback TCP port that nothing listens on, for a
// server to bind and bind again after a restart. It comes from below the
// kernel's ephemeral range and is never handed out twice by this process.
// A port from ":0" lies in that range, where any outbound connection or
// ":0" listener on the machine (the other test packages run in parallel)
// could take it while the server is down: a NATS cluster node once failed
// to start on that ("address already in use"), and a nats-server
// restarted on its port was not ready in 10 s.
func FreePort(t testing.TB) int {
	t.Helper()
	ports.Lock()
	defer ports.Unlock()
	if ports.next == 0 {
		ports.low = ephemeralLow()
		ports.next = 10000 + rand.IntN(ports.low-10000)
	}
	for range ports.low - 10000 {
		p := ports.next
		if ports.next++; ports.next >= ports.low {
			ports.next = 10000
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err == nil {
			ln.Close()
			return p
		}
	}
	t.Fatalf("no free port in 10000-%d", ports.low-1)
	return 0
}

// ports is where FreePort goes on from.
var ports struct {
	sync.Mutex
	next, low int
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768
// when it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	low, err := strconv.Atoi(f[0])
	if err != nil || low <= 11000 {
		return 32768
	}
	return low
}
