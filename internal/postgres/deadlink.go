package postgres

import (
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sys/unix"
)

// defaultTCPUserTimeout is how long a TCP connection to PostgreSQL may go
// without the server's kernel acknowledging anything (what was sent, or a
// keepalive probe of an idle connection) before it is dropped: a server
// machine that died, a failover to another address, a partition. A slow
// statement is not cut: the server's kernel acknowledges it meanwhile.
const defaultTCPUserTimeout = 20 * time.Second

// defaultConnectTimeout bounds a connection's start (its dial, TLS and
// authentication) when the connection string sets no connect_timeout: a
// server whose kernel accepts the connection but which answers nothing
// (frozen, stopped by SIGSTOP, a proxy that stopped forwarding) held the
// caller for good when its context could not end, as an order's insert's
// cannot once its client left (Submit; InsertEpoch bounds a statement
// already sent). A variable for the tests.
var defaultConnectTimeout = 10 * time.Second

// deadLinkDialer makes the pool's TCP connections notice a server that is
// gone without a word. With Linux's defaults a statement sent into such
// a link is retransmitted for about 15 minutes (tcp_retries2) and an
// answer waited for on an idle link for 2.5 minutes (Go's keepalive)
// before the connection fails: a worker's claim or result write waited
// that long though a promoted standby (the DSN's next host) answered at
// once, and its host ran nothing meanwhile. It honours connect_timeout
// (defaultConnectTimeout when it is not set), and takes libpq's
// tcp_user_timeout (milliseconds; 0: the kernel's) from the connection
// string, as libpq does, instead of sending it on to the server (where
// it is PostgreSQL's own setting, for the server's end).
func deadLinkDialer(cfg *pgxpool.Config) error {
	timeout := defaultTCPUserTimeout
	if v, ok := cfg.ConnConfig.RuntimeParams["tcp_user_timeout"]; ok {
		delete(cfg.ConnConfig.RuntimeParams, "tcp_user_timeout")
		ms, err := strconv.Atoi(v)
		if err != nil || ms < 0 {
			return fmt.Errorf("parse database url: tcp_user_timeout %q is not a number of milliseconds", v)
		}
		timeout = time.Duration(ms) * time.Millisecond
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = defaultConnectTimeout
	}
	d := &net.Dialer{Timeout: cfg.ConnConfig.ConnectTimeout}
	if timeout > 0 {
		// Probes of an idle link from 5 s on, so that the user timeout
		// ends an answer that will never come within that time too.
		d.KeepAliveConfig = net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: 5 * time.Second, Count: 3}
		d.Control = func(network, _ string, c syscall.RawConn) error {
			if network != "tcp" && network != "tcp4" && network != "tcp6" {
				return nil
			}
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(timeout.Milliseconds()))
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	cfg.ConnConfig.DialFunc = d.DialContext
	return nil
}
