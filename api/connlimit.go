package api

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// ConnLimits bounds the connections the API holds open at once. Every
// connection costs a file descriptor from the moment it is accepted, before
// the ACL, a rate limit or a token is looked at, and the API shares its
// process's descriptors with what it cannot do without: its PostgreSQL and
// NATS connections and, in serve, the embedded servers, the PostgreSQL
// supervisor and the worker's pipes to the orders it starts.
type ConnLimits struct {
	// Total is the most connections open at once (http.max_connections);
	// past it new connections wait in the kernel's backlog. 0: no limit.
	Total int
	// PerIP is the most connections one client address holds at once
	// (http.max_connections_per_ip), keyed as the per-IP rate limit is
	// (an IPv4 address, an IPv6 /64); past it a new connection is closed
	// at once. 0: no limit.
	PerIP int
	// Trusted reports whether a socket peer (ip:port) is a trusted proxy,
	// whose connections carry many clients and count toward Total only.
	Trusted func(remoteAddr string) bool
}

// AutoMaxConnections is http.max_connections when it is 0: half of the
// process's open-file limit, so that however many connections clients
// open, the other half is left for PostgreSQL, NATS and the worker.
func AutoMaxConnections() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 {
		return 512
	}
	if rl.Cur == ^uint64(0) || rl.Cur > 1<<30 { // RLIM_INFINITY or near it
		return 1 << 20
	}
	return max(int(rl.Cur/2), 16)
}

// ConnLimitListener wraps ln so that it holds at most limits().Total
// connections at once, and at most limits().PerIP of one client address.
// limits is read at each accept, so a reload applies to new connections.
func ConnLimitListener(ln net.Listener, limits func() ConnLimits, logger *slog.Logger) net.Listener {
	l := &connLimitListener{Listener: ln, limits: limits, logger: logger, perIP: map[string]int{}}
	l.cond = sync.NewCond(&l.mu)
	return l
}

type connLimitListener struct {
	net.Listener
	limits func() ConnLimits
	logger *slog.Logger

	mu     sync.Mutex
	cond   *sync.Cond
	open   int
	perIP  map[string]int
	closed bool
	// logging, at most once a minute each
	fullLogged    time.Time
	refusedLogged time.Time
	refused       int
}

func (l *connLimitListener) Accept() (net.Conn, error) {
	for {
		if err := l.waitSlot(); err != nil {
			return nil, err
		}
		c, err := l.Listener.Accept()
		if err != nil {
			l.release("")
			return nil, err
		}
		key := l.ipKey(c)
		if !l.takeIP(key) {
			l.release("")
			_ = c.Close()
			continue
		}
		return &limitedConn{Conn: c, l: l, key: key}, nil
	}
}

func (l *connLimitListener) Close() error {
	l.mu.Lock()
	l.closed = true
	l.cond.Broadcast()
	l.mu.Unlock()
	return l.Listener.Close()
}

// waitSlot takes one of Total's places, waiting while all are taken.
func (l *connLimitListener) waitSlot() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for !l.closed {
		total := l.limits().Total
		if total <= 0 || l.open < total {
			l.open++
			return nil
		}
		if now := time.Now(); now.Sub(l.fullLogged) >= time.Minute {
			l.fullLogged = now
			l.logger.Warn("new connections wait: the API holds http.max_connections connections", "max_connections", total)
		}
		l.cond.Wait()
	}
	return net.ErrClosed
}

// ipKey is the per-address key of c's peer, or "" when its connections
// are not counted per address (a trusted proxy, a peer that is no IP).
func (l *connLimitListener) ipKey(c net.Conn) string {
	lim := l.limits()
	if lim.PerIP <= 0 {
		return ""
	}
	remote := c.RemoteAddr().String()
	if lim.Trusted != nil && lim.Trusted(remote) {
		return ""
	}
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return ""
	}
	return ipRateKey(ap.Addr().String())
}

// takeIP counts a connection of key, or refuses it when key holds PerIP
// already.
func (l *connLimitListener) takeIP(key string) bool {
	if key == "" {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if per := l.limits().PerIP; per > 0 && l.perIP[key] >= per {
		l.refused++
		if now := time.Now(); now.Sub(l.refusedLogged) >= time.Minute {
			l.refusedLogged = now
			l.logger.Warn("connections closed at once: the address holds http.max_connections_per_ip connections",
				"address", key, "max_connections_per_ip", per, "refused", l.refused)
			l.refused = 0
		}
		return false
	}
	l.perIP[key]++
	return true
}

// release gives back a place, and key's count when key is not "".
func (l *connLimitListener) release(key string) {
	l.mu.Lock()
	l.open--
	if key != "" {
		if l.perIP[key] <= 1 {
			delete(l.perIP, key)
		} else {
			l.perIP[key]--
		}
	}
	l.cond.Signal()
	l.mu.Unlock()
}

// limitedConn gives its places back when it closes, once.
type limitedConn struct {
	net.Conn
	l    *connLimitListener
	key  string
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.key) })
	return err
}

// CloseWrite keeps net/http's half-close after a 431 (see envelopeConn).
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// ReadFrom keeps the TCP connection's sendfile/splice path.
func (c *limitedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.Conn, r)
}
