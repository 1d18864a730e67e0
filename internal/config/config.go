// Package config holds orderly's configuration: one file (YAML or TOML),
// environment overrides ORDERLY_<SECTION>__<KEY>, then flags, over defaults.
package config

import (
	"time"

	"github.com/orderly-run/orderly/internal/order"
)

// Config is the whole configuration. Every key is documented in
// docs/config.md; koanf tags are the file/env key names.
type Config struct {
	DataDir     string        `koanf:"data_dir"`
	Listen      string        `koanf:"listen"`
	Host        string        `koanf:"host"` // this machine's worker host id (serve, worker)
	DatabaseURL string        `koanf:"database_url"`
	Retention   time.Duration `koanf:"retention"`
	// ConfigCheckInterval is how often Watcher.Run hashes the config file
	// to report drift (DESIGN §4.7).
	ConfigCheckInterval time.Duration `koanf:"config_check_interval"`
	// MemoryLimitBytes is the Go runtime's soft memory limit in a server
	// command (internal/memory); 0: none.
	MemoryLimitBytes int64 `koanf:"memory_limit_bytes"`

	NATS   NATS   `koanf:"nats"`
	Log    Log    `koanf:"log"`
	Worker Worker `koanf:"worker"`
	Limits Limits `koanf:"limits"`
	Auth   Auth   `koanf:"auth"`
	ACL    ACL    `koanf:"acl"`
	Policy []Rule `koanf:"policy"`
	HTTP   HTTP   `koanf:"http"`
	// Compat holds the drop-in surfaces for httpexec and Vigrid clients (compat.go).
	Compat Compat `koanf:"compat"`
	// Runbooks configures markdown runbooks run as script orders (runbooks.go).
	Runbooks Runbooks `koanf:"runbooks"`
	// Actions are named, parameterized, fixed-format commands (actions.go).
	Actions Actions `koanf:"actions"`
}

// NATS configures the broker connection and the JetStream objects.
type NATS struct {
	URL         string `koanf:"url"`    // empty: serve embeds nats-server
	Listen      string `koanf:"listen"` // embedded server address, default 127.0.0.1:4222
	Credentials string `koanf:"credentials"`
	Nkey        string `koanf:"nkey"` // nkey seed file; serve writes one per role (docs/security.md)
	// TLSCA is the PEM file of the CAs the NATS servers' certificates
	// must chain to, for NATS only (the JWKS client keeps the system's);
	// TLSCert and TLSKey are the client certificate presented to servers
	// that verify clients (verify: true in their tls block).
	TLSCA       string        `koanf:"tls_ca"`
	TLSCert     string        `koanf:"tls_cert"`
	TLSKey      string        `koanf:"tls_key"`
	Workers     []string      `koanf:"workers"` // extra hosts serve issues worker credentials for
	Replicas    int           `koanf:"replicas"`
	DedupWindow time.Duration `koanf:"dedup_window"`
	AckWait     time.Duration `koanf:"ack_wait"`
	LeaseTTL    time.Duration `koanf:"lease_ttl"`
	Heartbeat   time.Duration `koanf:"heartbeat"`

	// ListenTLSCert and ListenTLSKey are the certificate of serve's
	// embedded server: workers joining it over the network then speak TLS
	// to it. ListenTLSClientCA, when set, makes it ask them for a client
	// certificate that one of its CAs signed (nats-server's verify).
	ListenTLSCert     string `koanf:"listen_tls_cert"`
	ListenTLSKey      string `koanf:"listen_tls_key"`
	ListenTLSClientCA string `koanf:"listen_tls_client_ca"`
}

// Log configures log/slog output.
type Log struct {
	Format string `koanf:"format"` // text, json, syslog
	Level  string `koanf:"level"`
	// SyslogAddress is the local syslog datagram socket that log.format
	// syslog writes RFC 5424 messages to.
	SyslogAddress string `koanf:"syslog_address"`
	// SyslogFacility is the facility name of those messages.
	SyslogFacility string `koanf:"syslog_facility"`
}

// HTTP configures the API server.
type HTTP struct {
	ReadTimeout  time.Duration `koanf:"read_timeout"`
	WriteTimeout time.Duration `koanf:"write_timeout"`
	MaxBodyBytes int64         `koanf:"max_body_bytes"`
	MaxWait      time.Duration `koanf:"max_wait"` // cap on Prefer: wait=N
	// MaxConnections caps the connections the API holds at once; 0: half
	// of the process's open-file limit. MaxConnectionsPerIP caps one
	// client address's (trusted proxies aside); 0: none.
	MaxConnections      int    `koanf:"max_connections"`
	MaxConnectionsPerIP int    `koanf:"max_connections_per_ip"`
	MetricsPublic       bool   `koanf:"metrics_public"`
	TLSCert             string `koanf:"tls_cert"`
	TLSKey              string `koanf:"tls_key"`
}

// Worker is the host policy a worker enforces on its own, whatever the API
// allowed (DESIGN §4.4), plus its execution settings.
type Worker struct {
	CommandPath    []string      `koanf:"command_path"`
	ExecRoot       string        `koanf:"exec_root"`
	FollowLinks    bool          `koanf:"follow_links"`
	Allow          []string      `koanf:"allow"` // regexes over "<name> <args…>" and "<path> <args…>"
	Deny           []string      `koanf:"deny"`
	AllowedUsers   []string      `koanf:"allowed_users"`
	DefaultUser    string        `koanf:"default_user"`
	UseSudo        bool          `koanf:"use_sudo"`
	ForbiddenChars string        `koanf:"forbidden_chars"`
	EnvDeny        []string      `koanf:"env_deny"`  // names or prefixes ending in *
	EnvAllow       []string      `koanf:"env_allow"` // when set, the only names an order may set; env_deny still applies
	KillGrace      time.Duration `koanf:"kill_grace"`
	MaxOutputBytes int64         `koanf:"max_output_bytes"` // per stream
	ShutdownGrace  time.Duration `koanf:"shutdown_grace"`
	// MetricsListen, when set, serves /metrics of a standalone `orderly
	// worker` on this address (unauthenticated: bind it to loopback or a
	// scrape network). serve exposes metrics through the API instead.
	MetricsListen string `koanf:"metrics_listen"`
	// Cgroup runs each order in its own cgroup v2 under this parent, so
	// that ending an order kills processes that left its process group
	// too: "auto" is the worker's own cgroup when systemd delegated it
	// (Delegate=yes) or no systemd runs the machine, and process groups
	// otherwise; "on" is auto that refuses to start without one; "off" (or
	// "") is process groups only; a path is that cgroup directory.
	Cgroup string `koanf:"cgroup"`
}

// Limits are the API's input limits and rate limits.
type Limits struct {
	MaxArgs          int           `koanf:"max_args"`
	MaxArgBytes      int           `koanf:"max_arg_bytes"`
	MaxArgsBytes     int           `koanf:"max_args_bytes"`
	MaxStdinBytes    int           `koanf:"max_stdin_bytes"`
	MaxEnv           int           `koanf:"max_env"`
	MaxEnvBytes      int           `koanf:"max_env_bytes"`
	DefaultTimeout   time.Duration `koanf:"default_timeout"`
	MaxTimeout       time.Duration `koanf:"max_timeout"`
	RatePerPrincipal int           `koanf:"rate_per_principal"` // requests per minute, 0 = off
	RatePerIP        int           `koanf:"rate_per_ip"`
	// MaxStreamsPerPrincipal bounds the event streams and waits one
	// principal holds open at once, per API process; 0 = off.
	MaxStreamsPerPrincipal int `koanf:"max_streams_per_principal"`
	// RateShared counts the rate limits across all API replicas through a
	// NATS KV bucket (fixed one-minute windows) instead of per process.
	RateShared bool `koanf:"rate_shared"`
}

// Auth lists the credentials the API accepts.
type Auth struct {
	Tokens []Token `koanf:"tokens"`
	JWT    JWT     `koanf:"jwt"`
}

// Token is a static bearer token, stored only as the hex SHA-256 of the token.
// PreviousSHA256, set during a rotation, is the hash of the token before
// this one: both are accepted as the same principal until it is removed,
// so a client keeps its name (its orders, idempotency keys and the policy
// rules that name it) across a new token.
type Token struct {
	Name           string   `koanf:"name"`
	SHA256         string   `koanf:"sha256"`
	PreviousSHA256 string   `koanf:"previous_sha256"`
	Roles          []string `koanf:"roles"`
}

// JWT configures JSON Web Token validation. The algorithm is pinned.
type JWT struct {
	Algorithm string `koanf:"algorithm"`  // HS256, RS256, EdDSA or Ed25519 (one algorithm); empty disables JWT
	Secret    Secret `koanf:"secret"`     // HS256
	PublicKey string `koanf:"public_key"` // PEM file, RS256/EdDSA/Ed25519
	// PreviousSecret and PreviousPublicKey hold the key before Secret or
	// PublicKey during a rotation: tokens it signed are accepted too.
	PreviousSecret    Secret        `koanf:"previous_secret"`
	PreviousPublicKey string        `koanf:"previous_public_key"`
	Issuer            string        `koanf:"issuer"`
	Audience          string        `koanf:"audience"`
	Leeway            time.Duration `koanf:"leeway"`
	// MaxLifetime bounds how long a token may live: exp - iat (and
	// exp - nbf) when present, and always what remains of it, exp - now.
	MaxLifetime time.Duration `koanf:"max_lifetime"`
	RolesClaim  string        `koanf:"roles_claim"`
	NameClaim   string        `koanf:"name_claim"`
	// JWKS is a key set published by an identity provider, instead of
	// Algorithm and its key: several keys at once, picked by kid.
	JWKS JWKS `koanf:"jwks"`
}

// JWKS is a JSON Web Key Set (RFC 7517) read from a file or fetched from
// a URL, refreshed while the process runs.
type JWKS struct {
	URL    string `koanf:"url"`     // https://, or http:// to a loopback host
	File   string `koanf:"file"`    // a local JWKS document; exclusive with URL
	CAFile string `koanf:"ca_file"` // PEM roots for URL's TLS; empty: the system's
	// Refresh is how old the set may get before a request reads it
	// again itself (it is read in the background from half of that).
	Refresh time.Duration `koanf:"refresh"`
	// MaxStale is how long a set is used without a good read: a provider
	// outage longer than that refuses every JWT. At least Refresh.
	MaxStale time.Duration `koanf:"max_stale"`
	// MinRefresh is the least time between two reads: what a token with
	// an unknown kid can make happen, at most.
	MinRefresh time.Duration `koanf:"min_refresh"`
	// Timeout bounds one read, and so how long a request waits for one.
	Timeout time.Duration `koanf:"timeout"`
}

// Set reports whether a key set is configured.
func (k JWKS) Set() bool { return k.URL != "" || k.File != "" }

// Enabled reports whether JWTs are accepted: an algorithm with its key,
// or a key set.
func (j JWT) Enabled() bool { return j.Algorithm != "" || j.JWKS.Set() }

// MaxJWKSTimeout bounds auth.jwt.jwks.timeout: a request that meets an
// unknown kid may wait this long for the identity provider.
const MaxJWKSTimeout = 30 * time.Second

// MaxJWTLeeway is the most clock skew auth.jwt.leeway may allow: beyond
// it a clock is broken, not skewed, and the leeway would keep expired
// tokens alive that long.
const MaxJWTLeeway = 5 * time.Minute

// ACL is the network layer: deny wins, then allow; with allow set, anything
// else is denied.
type ACL struct {
	Allow          []string `koanf:"allow"`
	Deny           []string `koanf:"deny"`
	TrustedProxies []string `koanf:"trusted_proxies"`
}

// Rule is one API authorization rule (DESIGN §4.3).
type Rule struct {
	Name       string        `koanf:"name"`
	Principals []string      `koanf:"principals"`
	Roles      []string      `koanf:"roles"`
	Hosts      []string      `koanf:"hosts"` // globs
	Allow      []string      `koanf:"allow"` // regexes
	Deny       []string      `koanf:"deny"`
	RunAs      []string      `koanf:"run_as"`
	MaxTimeout time.Duration `koanf:"max_timeout"`
	DryRunOnly bool          `koanf:"dry_run_only"`
}

// DefaultMemoryLimit is memory_limit_bytes when unset: with the ~30 MiB
// of its own executable that RSS also counts, it keeps serve (API,
// embedded NATS and a worker in one process) near 80 MiB while an order's
// 10 MiB of kept output passes through it (docs/benchmarks.md, "Memory").
// Small orders keep their heap below it and never feel it.
const DefaultMemoryLimit = 48 << 20

// minMemoryLimit refuses a limit so small that the collector would run
// all the time.
const minMemoryLimit = 16 << 20

// Default returns the configuration used when nothing is set.
func Default() Config {
	l := order.DefaultLimits()
	return Config{
		DataDir:   "./data",
		Listen:    "127.0.0.1:8080",
		Retention: 90 * 24 * time.Hour,

		ConfigCheckInterval: 5 * time.Second,
		MemoryLimitBytes:    DefaultMemoryLimit,
		NATS: NATS{
			Listen:      "127.0.0.1:4222",
			Replicas:    1,
			DedupWindow: 2 * time.Minute,
			AckWait:     30 * time.Second,
			LeaseTTL:    15 * time.Second,
			Heartbeat:   5 * time.Second,
		},
		Log: Log{Format: "text", Level: "info", SyslogAddress: "/dev/log", SyslogFacility: "daemon"},
		HTTP: HTTP{
			ReadTimeout:         30 * time.Second,
			WriteTimeout:        0, // long waits and SSE; per-handler deadlines instead
			MaxBodyBytes:        1 << 20,
			MaxWait:             5 * time.Minute,
			MaxConnectionsPerIP: 256,
		},
		Worker: Worker{
			CommandPath:    []string{"/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"},
			EnvDeny:        DefaultEnvDeny(),
			KillGrace:      5 * time.Second,
			MaxOutputBytes: 10 << 20,
			ShutdownGrace:  30 * time.Second,
			Cgroup:         "auto",
		},
		Limits: Limits{
			MaxArgs:        l.MaxArgs,
			MaxArgBytes:    l.MaxArgBytes,
			MaxArgsBytes:   l.MaxArgsBytes,
			MaxStdinBytes:  l.MaxStdinBytes,
			MaxEnv:         l.MaxEnv,
			MaxEnvBytes:    l.MaxEnvBytes,
			DefaultTimeout: l.DefaultTimeout,
			MaxTimeout:     l.MaxTimeout,
			// A minute's allowance may come as one burst. High enough for
			// polling clients, low enough that one address or credential
			// cannot flood PostgreSQL with orders or audit rows.
			RatePerPrincipal:       600,
			RatePerIP:              1200,
			MaxStreamsPerPrincipal: 100,
		},
		Auth: Auth{JWT: JWT{Leeway: 30 * time.Second, MaxLifetime: 24 * time.Hour, RolesClaim: "roles", NameClaim: "sub",
			JWKS: JWKS{Refresh: 5 * time.Minute, MaxStale: time.Hour, MinRefresh: 30 * time.Second, Timeout: 5 * time.Second}}},
		Compat: DefaultCompat(),

		Runbooks: DefaultRunbooks(),
		Actions:  DefaultActions(),
	}
}

// DefaultEnvDeny lists environment names a request may never set: loader,
// shell and interpreter hooks that turn an env override into code execution.
func DefaultEnvDeny() []string {
	return []string{
		"LD_*", "DYLD_*", "PATH", "BASH_ENV", "ENV", "IFS", "SHELLOPTS", "BASHOPTS",
		"PS4", "PROMPT_COMMAND", "CDPATH", "GLOBIGNORE", "HOME", "SHELL", "USER", "LOGNAME",
		"PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PERL5OPT", "PERL5LIB", "PERLLIB",
		"RUBYOPT", "RUBYLIB", "NODE_OPTIONS", "NODE_PATH", "JAVA_TOOL_OPTIONS",
		"_JAVA_OPTIONS", "GCONV_PATH", "LOCPATH", "MALLOC_*", "GLIBC_TUNABLES",
		"BASH_FUNC_*", "GIT_*", "SSH_*", "SUDO_*",
		// Programs that run a command or load code named by a variable.
		"PYTHONUSERBASE", "PYTHONWARNINGS", "PYTHONBREAKPOINT", "PYTHONINSPECT", "PYTHONPLATLIBDIR",
		"JDK_JAVA_OPTIONS", "LESSOPEN", "LESSCLOSE", "LESSKEY*", "PAGER", "MANPAGER",
		"SYSTEMD_PAGER", "EDITOR", "VISUAL", "BROWSER", "ZDOTDIR", "NLSPATH", "TEXTDOMAINDIR",
		"OPENSSL_*", "XDG_CONFIG_HOME", "XDG_CONFIG_DIRS", "HOSTALIASES", "TERMINFO", "TERMINFO_DIRS",
		"LUA_INIT*", "LUA_PATH*", "LUA_CPATH*", "TCLLIBPATH", "PHPRC", "PHP_INI_SCAN_DIR", "KRB5_CONFIG",
		// Options read from the environment that run a command: tar's
		// --checkpoint-action=exec, zip's -TT, make's --eval, rsync's
		// transport, systemctl edit's editor, man's pager, wget's askpass.
		"TAR_OPTIONS", "ZIPOPT", "MAKEFLAGS", "GNUMAKEFLAGS", "RSYNC_RSH", "RSYNC_CONNECT_PROG",
		"SYSTEMD_EDITOR", "MANOPT", "WGETRC",
	}
}

// OrderLimits converts the configured limits into the domain's.
func (c Config) OrderLimits() order.Limits {
	l := order.DefaultLimits()
	l.MaxArgs = c.Limits.MaxArgs
	l.MaxArgBytes = c.Limits.MaxArgBytes
	l.MaxArgsBytes = c.Limits.MaxArgsBytes
	l.MaxStdinBytes = c.Limits.MaxStdinBytes
	l.MaxEnv = c.Limits.MaxEnv
	l.MaxEnvBytes = c.Limits.MaxEnvBytes
	l.DefaultTimeout = c.Limits.DefaultTimeout
	l.MaxTimeout = c.Limits.MaxTimeout
	return l
}
