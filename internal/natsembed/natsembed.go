// Package natsembed runs nats-server with JetStream inside the orderly
// process, so that `orderly serve` and the tests need no separate broker.
// Other processes (extra workers) can still connect to it over TCP.
package natsembed

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// readyTimeout bounds how long Start waits for the listener.
const readyTimeout = 10 * time.Second

// Options configures Start. Only Dir is required.
type Options struct {
	// Dir is the JetStream store directory.
	Dir string
	// Host is the address to listen on; default 127.0.0.1.
	Host string
	// Port is the client port: 0 means 4222, -1 a random free port.
	Port int
	// Logger receives the server's warnings and errors (its notices at
	// debug level); nil discards them.
	Logger *slog.Logger
	// SyncAlways fsyncs every JetStream write before acknowledging it, as
	// DESIGN.md §2 requires in production; tests leave it off for speed.
	SyncAlways bool
	// Credentials, when set, make every client authenticate with one of
	// its nkeys and give it its role's permissions in its role's account
	// (accounts.go); without them the server accepts anyone, in one
	// account (tests only: serve always sets them).
	Credentials *Credentials
	// OneAccount puts every user of Credentials in one account, with its
	// role's permissions, as deploy/nats/auth.conf did before the
	// accounts (accounts.go): tests of what a worker's seed can still do
	// on a cluster not moved to them yet, where the signatures of the
	// lease, the claim mark and the publish generation are what holds.
	OneAccount bool
	// TLS, when set, is the client port's TLS (serve's
	// nats.listen_tls_*): every client reaching it over the network must
	// speak TLS, and with ClientAuth tls.RequireAndVerifyClientCert
	// present a certificate of ClientCAs. In-process clients
	// (InProcess) need neither: nats-server lets them speak plainly,
	// as nothing they send leaves the process.
	TLS *tls.Config
}

// Server is a running embedded nats-server.
type Server struct {
	ns   *server.Server
	opts *server.Options // as started, for reloads

	oneAccount bool // Options.OneAccount

	storeDir string    // opts.Dir
	full     storeFull // a write found no space: see heal
	stop     chan struct{}
	stopOnce sync.Once
	healed   chan struct{} // closed when heal has returned
	restarts atomic.Uint64 // JetStream's restarts in place (restartJetStream)
}

// Start starts nats-server with JetStream on opts and waits until it accepts
// connections.
func Start(opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("natsembed: Options.Dir (the JetStream store) is required")
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Port == 0 {
		opts.Port = server.DEFAULT_PORT
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	addr := net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port))
	// nats-server only logs a failed listen and then never becomes ready,
	// so a taken port is detected here to fail fast with a useful message.
	// Another process can still take the port in between; readiness below
	// catches that too, only more slowly.
	if opts.Port > 0 {
		if err := CheckFree(addr); err != nil {
			return nil, err
		}
	}
	var users []*server.NkeyUser
	var accounts []*server.Account
	if opts.Credentials != nil {
		if len(opts.Credentials.users) == 0 {
			return nil, errors.New("natsembed: credentials without users")
		}
		var err error
		if accounts, users, err = opts.Credentials.accounts(opts.OneAccount); err != nil {
			return nil, err
		}
		if err := adoptGlobalStore(opts.Dir, opts.Logger); err != nil {
			return nil, err
		}
	}
	sopts := &server.Options{
		Accounts:   accounts,
		Nkeys:      users,
		ServerName: "orderly",
		Host:       opts.Host,
		Port:       opts.Port,
		JetStream:  true,
		StoreDir:   opts.Dir,
		SyncAlways: opts.SyncAlways,
		// Fixed, not derived: nats-server sizes JetStream's memory from
		// GOMEMLIMIT when it is set, so serve with GOMEMLIMIT=40MiB could
		// not create its live-output stream (capped at 256 MiB,
		// queue.liveConfig) and refused to start.
		JetStreamMaxMemory: 1 << 30,
		// The orders stream has a consumer per host, and nats-server caps
		// the consumers of a stream that sets no limit of its own at 1,000
		// unless told otherwise: the 1,001st host's worker could not
		// create its consumer. -1 is no cap.
		JetStreamLimits: server.JSLimitOpts{DefaultMaxConsumers: -1},
		// Without NoSigs the server installs its own SIGTERM/SIGINT handler
		// and exits the whole process, skipping orderly's shutdown.
		NoSigs: true,
		// The handshake's certificate comes from TLS.GetCertificate, so
		// that serve can renew it without a reload of the server.
		TLSConfig: opts.TLS,
		TLSVerify: opts.TLS != nil && opts.TLS.ClientAuth == tls.RequireAndVerifyClientCert,
	}
	ns, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("natsembed: configure nats-server: %w", err)
	}
	s := &Server{ns: ns, opts: sopts, oneAccount: opts.OneAccount, storeDir: opts.Dir,
		stop: make(chan struct{}), healed: make(chan struct{})}
	ns.SetLoggerV2(slogAdapter{l: opts.Logger, full: &s.full}, false, false, false)
	ns.Start()
	if !ns.ReadyForConnections(readyTimeout) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("natsembed: nats-server on %s not ready after %s (see its log)", addr, readyTimeout)
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("natsembed: JetStream did not start (store %s)", opts.Dir)
	}
	go func() {
		defer close(s.healed)
		s.heal(s.stop, opts.Logger)
	}()
	opts.Logger.Info("nats-server ready", "url", ns.ClientURL(), "store_dir", opts.Dir, "sync_always", s.SyncAlways())
	return s, nil
}

// SyncAlways reports whether the running JetStream fsyncs every write.
func (s *Server) SyncAlways() bool {
	c := s.ns.JetStreamConfig()
	return c != nil && c.SyncAlways
}

// SetCredentials replaces the users the server accepts with c's, as a
// configuration reload of the running server: a new worker host can join
// without a restart, and clients whose credential is gone are
// disconnected. A server started without credentials cannot be given some.
func (s *Server) SetCredentials(c *Credentials) error {
	if c == nil || len(c.users) == 0 {
		return errors.New("natsembed: credentials without users")
	}
	if len(s.opts.Nkeys) == 0 {
		return errors.New("natsembed: the server was started without credentials")
	}
	accounts, users, err := c.accounts(s.oneAccount)
	if err != nil {
		return err
	}
	added := false
	for _, a := range accounts {
		if _, err := s.ns.LookupAccount(a.Name); err != nil {
			added = true
		}
	}
	o := s.opts.Clone()
	o.Accounts, o.Nkeys = accounts, users
	if err := s.ns.ReloadOptions(o); err != nil {
		return fmt.Errorf("natsembed: reload users: %w", err)
	}
	// nats-server (2.15.2) subscribes the service imports of an account a
	// reload adds only at the next reload (configureAccounts makes them
	// only for accounts it updates, or when not reloading): until then a
	// new host's worker had every request unanswered ("no responders").
	if added {
		if err := s.ns.ReloadOptions(o.Clone()); err != nil {
			return fmt.Errorf("natsembed: reload users: %w", err)
		}
	}
	s.opts = o
	return nil
}

// CheckFree fails when something already listens on addr, saying what to
// do about it; serve asks before it starts anything else. serve has no
// flag for nats.listen, so the message names the two ways to set it: a
// newcomer told "set nats.listen" tried --nats-listen.
func CheckFree(addr string) error {
	l, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("natsembed: %s is in use: is another orderly serve running? set nats.listen (ORDERLY_NATS__LISTEN=127.0.0.1:4223, or nats.listen in the --config file)", addr)
	}
	if err != nil {
		return fmt.Errorf("natsembed: listen on %s: %w", addr, err)
	}
	return l.Close()
}

// ClientURL is the URL clients connect to, with the real port when
// Options.Port was -1: tls:// when the server has TLS, else nats://.
func (s *Server) ClientURL() string {
	return s.ns.ClientURL()
}

// InProcess is the server as a provider of in-process connections, for
// nats.InProcessServer: a client in the same process connects without a
// socket, authenticating as over TCP.
func (s *Server) InProcess() *server.Server { return s.ns }

// Shutdown stops the server and waits until it has, so that the store is
// closed when it returns.
func (s *Server) Shutdown() {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.healed
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}
