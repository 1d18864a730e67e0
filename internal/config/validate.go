package config

import (
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/orderly-run/orderly/internal/logging"
	"github.com/orderly-run/orderly/internal/order"
)

// Problem is one thing wrong with a configuration, named by its key so the
// operator knows exactly which line to fix.
type Problem struct {
	Key     string `json:"key"`
	Message string `json:"message"`
}

// ValidationError lists every problem Validate found, so that an operator
// fixes a file in one pass instead of one reload per mistake.
type ValidationError struct {
	Problems []Problem
}

// Error joins the problems as "key: message" pairs.
func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.Key + ": " + p.Message
	}
	return "invalid config: " + strings.Join(parts, "; ")
}

// problems collects Problems while Validate walks the config.
type problems []Problem

func (ps *problems) add(key, format string, args ...any) {
	*ps = append(*ps, Problem{Key: key, Message: fmt.Sprintf(format, args...)})
}

func (ps *problems) positive(key string, d time.Duration) {
	if d <= 0 {
		ps.add(key, "must be a positive duration, got %s", d)
	}
}

// atLeast refuses a duration below min: the period of a loop, which a
// nanosecond would turn into a tight one.
func (ps *problems) atLeast(key string, d, min time.Duration) {
	if d > 0 && d < min {
		ps.add(key, "must be at least %s, got %s", min, d)
	}
}

func (ps *problems) nonNegative(key string, d time.Duration) {
	if d < 0 {
		ps.add(key, "must not be negative, got %s", d)
	}
}

func (ps *problems) atLeastOne(key string, n int64) {
	if n <= 0 {
		ps.add(key, "must be greater than 0, got %d", n)
	}
}

func (ps *problems) hostPort(key, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		ps.add(key, "%q is not host:port (%v)", addr, err)
		return
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		ps.add(key, "%q has an invalid port", addr)
	}
	if host != "" && net.ParseIP(host) == nil && strings.ContainsAny(host, " /\\") {
		ps.add(key, "%q has an invalid host", addr)
	}
}

func (ps *problems) regexes(key string, list []string) {
	for i, re := range list {
		if re == "" {
			ps.add(fmt.Sprintf("%s[%d]", key, i), "empty regex (it would match every command)")
		} else if _, err := regexp.Compile(re); err != nil {
			ps.add(fmt.Sprintf("%s[%d]", key, i), "regex does not compile: %v", err)
		}
	}
}

// prefixes accepts what the network ACL accepts: a CIDR prefix, or a bare
// address meaning that one host; IPv4-mapped prefixes need at least /96.
func (ps *problems) prefixes(key string, list []string) {
	for i, s := range list {
		k := fmt.Sprintf("%s[%d]", key, i)
		if !strings.Contains(s, "/") {
			if a, err := netip.ParseAddr(s); err != nil || a.Zone() != "" {
				ps.add(k, "%q is not a CIDR prefix or an IP address", s)
			}
			continue
		}
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			ps.add(k, "%q is not a CIDR prefix: %v", s, err)
		case p.Addr().Is4In6() && p.Bits() < 96:
			ps.add(k, "%q: an IPv4-mapped prefix needs at least /96", s)
		}
	}
}

// users checks Unix user names or uids; extra lists values that are
// allowed besides, such as "*" in a policy rule.
func (ps *problems) users(key string, list []string, extra ...string) {
	for i, u := range list {
		if !order.ValidUser(u) && !slices.Contains(extra, u) {
			ps.add(fmt.Sprintf("%s[%d]", key, i), "%q is not a Unix user name or uid", u)
		}
	}
}

// Validate reports every problem in c, each with its key, as a
// *ValidationError. A config that passes can be served: regexes compile,
// CIDRs parse, paths are absolute, limits and durations are usable.
func (c Config) Validate() error {
	var ps problems

	if c.DataDir == "" {
		ps.add("data_dir", "must be set")
	}
	if c.Listen == "" {
		ps.add("listen", "must be set")
	} else {
		ps.hostPort("listen", c.Listen)
	}
	if c.Host != "" && !order.ValidHost(c.Host) {
		ps.add("host", "%q must be 1-128 characters of [A-Za-z0-9_-] (one NATS subject token)", c.Host)
	}
	ps.positive("retention", c.Retention)
	ps.positive("config_check_interval", c.ConfigCheckInterval)
	ps.atLeast("config_check_interval", c.ConfigCheckInterval, 10*time.Millisecond)
	if c.MemoryLimitBytes != 0 && c.MemoryLimitBytes < minMemoryLimit {
		ps.add("memory_limit_bytes", "must be 0 (no limit) or at least %d (16 MiB)", minMemoryLimit)
	}

	c.validateNATS(&ps)
	c.validateLogHTTP(&ps)
	c.validateWorker(&ps)
	c.validateLimits(&ps)
	c.validateAuth(&ps)

	ps.prefixes("acl.allow", c.ACL.Allow)
	ps.prefixes("acl.deny", c.ACL.Deny)
	ps.prefixes("acl.trusted_proxies", c.ACL.TrustedProxies)

	c.validatePolicy(&ps)
	c.validateCompat(&ps)
	c.validateRunbooks(&ps)
	c.validateStage0(&ps)
	c.validatePrincipalSources(&ps)
	c.validateActions(&ps)

	if len(ps) > 0 {
		return &ValidationError{Problems: ps}
	}
	return nil
}

func (c Config) validateNATS(ps *problems) {
	n := c.NATS
	if n.Listen != "" {
		ps.hostPort("nats.listen", n.Listen)
	}
	if n.Replicas < 1 || n.Replicas > 5 {
		ps.add("nats.replicas", "must be between 1 and 5, got %d", n.Replicas)
	}
	if n.Nkey != "" && n.Credentials != "" {
		ps.add("nats.nkey", "set either nats.nkey or nats.credentials, not both")
	}
	if n.TLSCert == "" && n.TLSKey != "" {
		ps.add("nats.tls_cert", "nats.tls_key is set without nats.tls_cert: give both (the client certificate and its key) or neither")
	}
	if n.TLSCert != "" && n.TLSKey == "" {
		ps.add("nats.tls_key", "nats.tls_cert is set without nats.tls_key: give both (the client certificate and its key) or neither")
	}
	if n.ListenTLSCert == "" && n.ListenTLSKey != "" {
		ps.add("nats.listen_tls_cert", "nats.listen_tls_key is set without nats.listen_tls_cert: give both (the embedded server's certificate and its key) or neither")
	}
	if n.ListenTLSCert != "" && n.ListenTLSKey == "" {
		ps.add("nats.listen_tls_key", "nats.listen_tls_cert is set without nats.listen_tls_key: give both (the embedded server's certificate and its key) or neither")
	}
	if n.ListenTLSClientCA != "" && n.ListenTLSCert == "" {
		ps.add("nats.listen_tls_client_ca", "asks the embedded server's clients for a certificate, which takes TLS: set nats.listen_tls_cert and nats.listen_tls_key too")
	}
	for _, h := range n.Workers {
		if !order.ValidHost(h) {
			ps.add("nats.workers", "%q must be 1-128 characters of [A-Za-z0-9_-] (one NATS subject token)", h)
		}
	}
	if n.DedupWindow < 2*time.Minute {
		ps.add("nats.dedup_window", "must be at least 2m so a republished order is deduplicated, got %s", n.DedupWindow)
	}
	ps.positive("nats.ack_wait", n.AckWait)
	ps.positive("nats.lease_ttl", n.LeaseTTL)
	ps.positive("nats.heartbeat", n.Heartbeat)
	ps.atLeast("nats.heartbeat", n.Heartbeat, 100*time.Millisecond) // two fsynced KV writes a beat
	// The worker renews its lease every heartbeat: three renewals to a
	// lease let one be lost or late (a NATS blip, a leader election)
	// without a standby taking the host. "Shorter than the lease" let
	// 14s against 15s through: a renewal 1s late lost the host.
	if n.Heartbeat > 0 && n.LeaseTTL > 0 && 3*n.Heartbeat > n.LeaseTTL {
		ps.add("nats.heartbeat", "must be at most a third of nats.lease_ttl (%s, so at most %s), got %s: the worker renews its host lease every heartbeat, and a third lets one renewal be lost without a standby taking the host",
			n.LeaseTTL, n.LeaseTTL/3, n.Heartbeat)
	}
	if n.Heartbeat > 0 && n.AckWait > 0 && n.Heartbeat >= n.AckWait {
		ps.add("nats.heartbeat", "must be shorter than nats.ack_wait (%s), or a running order is redelivered", n.AckWait)
	}
}

func (c Config) validateLogHTTP(ps *problems) {
	switch c.Log.Format {
	case "text", "json", "syslog":
	default:
		ps.add("log.format", "%q must be text, json or syslog", c.Log.Format)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.Log.Level)); err != nil {
		ps.add("log.level", "%q must be debug, info, warn or error", c.Log.Level)
	}
	if c.Log.Format == "syslog" && !filepath.IsAbs(c.Log.SyslogAddress) {
		ps.add("log.syslog_address", "%q must be the absolute path of a unix datagram socket (/dev/log)", c.Log.SyslogAddress)
	}
	if _, ok := logging.Facility(c.Log.SyslogFacility); !ok {
		ps.add("log.syslog_facility", "%q must be a syslog facility name (daemon, user, auth, authpriv, local0 … local7)", c.Log.SyslogFacility)
	}

	h := c.HTTP
	ps.positive("http.read_timeout", h.ReadTimeout)
	ps.nonNegative("http.write_timeout", h.WriteTimeout)
	ps.atLeastOne("http.max_body_bytes", h.MaxBodyBytes)
	ps.nonNegative("http.max_wait", h.MaxWait)
	if h.MaxConnections < 0 {
		ps.add("http.max_connections", "must be 0 (half the open-file limit) or more, got %d", h.MaxConnections)
	}
	if h.MaxConnectionsPerIP < 0 {
		ps.add("http.max_connections_per_ip", "must be 0 (off) or more, got %d", h.MaxConnectionsPerIP)
	}
	if (h.TLSCert == "") != (h.TLSKey == "") {
		ps.add("http.tls_cert", "http.tls_cert and http.tls_key must be set together")
	}
}

func (c Config) validateWorker(ps *problems) {
	w := c.Worker
	if len(w.CommandPath) == 0 {
		ps.add("worker.command_path", "must list at least one directory")
	}
	for i, dir := range w.CommandPath {
		key := fmt.Sprintf("worker.command_path[%d]", i)
		switch {
		case !filepath.IsAbs(dir):
			ps.add(key, "%q must be an absolute directory", dir)
		case strings.Contains(dir, ":"):
			ps.add(key, "%q contains ':'; list each directory as its own entry", dir)
		}
	}
	if w.ExecRoot != "" && !filepath.IsAbs(w.ExecRoot) {
		ps.add("worker.exec_root", "%q must be an absolute directory", w.ExecRoot)
	}
	ps.regexes("worker.allow", w.Allow)
	ps.regexes("worker.deny", w.Deny)
	ps.users("worker.allowed_users", w.AllowedUsers)
	if w.DefaultUser != "" && !order.ValidUser(w.DefaultUser) {
		ps.add("worker.default_user", "%q is not a Unix user name or uid", w.DefaultUser)
	}
	for key, list := range map[string][]string{"worker.env_deny": w.EnvDeny, "worker.env_allow": w.EnvAllow} {
		for i, e := range list {
			if !order.ValidEnvName(strings.TrimSuffix(e, "*")) {
				ps.add(fmt.Sprintf("%s[%d]", key, i), "%q must be a variable name, or a prefix ending in *", e)
			}
		}
	}
	ps.positive("worker.kill_grace", w.KillGrace)
	ps.atLeastOne("worker.max_output_bytes", w.MaxOutputBytes)
	ps.positive("worker.shutdown_grace", w.ShutdownGrace)
	switch w.Cgroup {
	case "", "off", "auto", "on":
	default:
		if !filepath.IsAbs(w.Cgroup) {
			ps.add("worker.cgroup", "%q must be auto, on, off, or the absolute path of a cgroup v2 directory", w.Cgroup)
		}
	}
}

func (c Config) validateLimits(ps *problems) {
	l := c.Limits
	ps.atLeastOne("limits.max_args", int64(l.MaxArgs))
	ps.atLeastOne("limits.max_arg_bytes", int64(l.MaxArgBytes))
	ps.atLeastOne("limits.max_args_bytes", int64(l.MaxArgsBytes))
	ps.atLeastOne("limits.max_stdin_bytes", int64(l.MaxStdinBytes))
	ps.atLeastOne("limits.max_env", int64(l.MaxEnv))
	ps.atLeastOne("limits.max_env_bytes", int64(l.MaxEnvBytes))
	ps.positive("limits.default_timeout", l.DefaultTimeout)
	ps.positive("limits.max_timeout", l.MaxTimeout)
	if l.DefaultTimeout > l.MaxTimeout && l.MaxTimeout > 0 {
		ps.add("limits.default_timeout", "must not exceed limits.max_timeout (%s)", l.MaxTimeout)
	}
	if l.RatePerPrincipal < 0 {
		ps.add("limits.rate_per_principal", "must be 0 (off) or more, got %d", l.RatePerPrincipal)
	}
	if l.MaxStreamsPerPrincipal < 0 {
		ps.add("limits.max_streams_per_principal", "must be 0 (off) or more, got %d", l.MaxStreamsPerPrincipal)
	}
	if l.RatePerIP < 0 {
		ps.add("limits.rate_per_ip", "must be 0 (off) or more, got %d", l.RatePerIP)
	}
}

func (c Config) validateAuth(ps *problems) {
	names := map[string]bool{}
	hashes := map[string]bool{}
	for i, t := range c.Auth.Tokens {
		key := fmt.Sprintf("auth.tokens[%d]", i)
		switch {
		case strings.TrimSpace(t.Name) == "":
			ps.add(key+".name", "must be set")
		case names[t.Name]:
			ps.add(key+".name", "%q is used by another token", t.Name)
		}
		names[t.Name] = true
		if b, err := hex.DecodeString(t.SHA256); err != nil || len(b) != 32 {
			// The value is a hash, not a secret, but a pasted raw token
			// would be one: never echo it.
			ps.add(key+".sha256", "must be 64 hex characters (the SHA-256 of the token, not the token)")
		} else if h := strings.ToLower(t.SHA256); hashes[h] {
			ps.add(key+".sha256", "is the same hash as another token's")
		} else {
			hashes[h] = true
		}
		if t.PreviousSHA256 != "" {
			if b, err := hex.DecodeString(t.PreviousSHA256); err != nil || len(b) != 32 {
				ps.add(key+".previous_sha256", "must be 64 hex characters (the SHA-256 of the token before sha256's, not the token)")
			} else if h := strings.ToLower(t.PreviousSHA256); hashes[h] {
				ps.add(key+".previous_sha256", "is the same hash as sha256 or another token's (the previous token is the one being replaced)")
			} else {
				hashes[h] = true
			}
		}
		for j, r := range t.Roles {
			if strings.TrimSpace(r) == "" {
				ps.add(fmt.Sprintf("%s.roles[%d]", key, j), "must not be empty")
			}
		}
	}

	j := c.Auth.JWT
	switch {
	case j.JWKS.Set():
		validateJWKS(ps, j)
	case j.Algorithm == "":
		// A key with JWT off would be ignored: the operator meant it on.
		if j.Secret != "" || j.PublicKey != "" || j.PreviousSecret != "" || j.PreviousPublicKey != "" {
			ps.add("auth.jwt.algorithm", "must be set (HS256, RS256, EdDSA or Ed25519) when auth.jwt.secret, public_key or a previous key is")
		}
		if j.JWKS.CAFile != "" {
			ps.add("auth.jwt.jwks.ca_file", "is only used with auth.jwt.jwks.url")
		}
	}
	switch j.Algorithm {
	case "":
	case "HS256":
		if len(j.Secret) < 32 {
			ps.add("auth.jwt.secret", "HS256 needs a secret of at least 32 bytes")
		}
		switch {
		case j.PreviousPublicKey != "":
			ps.add("auth.jwt.previous_public_key", "is not used with HS256; set previous_secret")
		case j.PreviousSecret != "" && len(j.PreviousSecret) < 32:
			ps.add("auth.jwt.previous_secret", "HS256 needs a secret of at least 32 bytes")
		case j.PreviousSecret != "" && j.PreviousSecret == j.Secret:
			ps.add("auth.jwt.previous_secret", "is auth.jwt.secret: set the new secret in secret, the old one here")
		}
	case "RS256", "EdDSA", "Ed25519":
		if j.PublicKey == "" {
			ps.add("auth.jwt.public_key", "%s needs a PEM public key file", j.Algorithm)
		}
		if j.PreviousSecret != "" {
			ps.add("auth.jwt.previous_secret", "is not used with %s; set previous_public_key", j.Algorithm)
		}
		// A public key is an identity provider's, which signs the tokens
		// of every service it serves with it: without an audience check,
		// a token issued for any of them would be accepted here, with the
		// roles it carries there (RFC 8725 §3.9). An HS256 secret is
		// orderly's alone.
		if strings.TrimSpace(j.Audience) == "" {
			ps.add("auth.jwt.audience", "must be set with %s: the identity provider signs other services' tokens with the same key, and only the audience says a token is for orderly", j.Algorithm)
		}
	default:
		ps.add("auth.jwt.algorithm", "%q must be HS256, RS256, EdDSA, Ed25519 or empty (JWT off)", j.Algorithm)
	}
	if j.Enabled() {
		ps.nonNegative("auth.jwt.leeway", j.Leeway)
		if j.Leeway > MaxJWTLeeway {
			ps.add("auth.jwt.leeway", "%s is more than %s: a clock that far off needs fixing (NTP), and every leeway lets an expired token live on", j.Leeway, MaxJWTLeeway)
		}
		ps.positive("auth.jwt.max_lifetime", j.MaxLifetime)
		if j.RolesClaim == "" {
			ps.add("auth.jwt.roles_claim", "must be set when JWT is on")
		}
		if j.NameClaim == "" {
			ps.add("auth.jwt.name_claim", "must be set when JWT is on")
		}
	}
}

// validateJWKS checks a key set's settings. The set stands for the
// algorithm and its keys: each key's own alg and kty decide what it
// verifies, and a secret from a document would be a secret anybody who
// reads it knows.
func validateJWKS(ps *problems, j JWT) {
	k := j.JWKS
	if j.Algorithm != "" || j.Secret != "" || j.PublicKey != "" || j.PreviousSecret != "" || j.PreviousPublicKey != "" {
		ps.add("auth.jwt.jwks", "replaces auth.jwt.algorithm, secret, public_key and the previous keys: set either a key set or those, not both (a key set's keys bring their own algorithms)")
	}
	if k.URL != "" && k.File != "" {
		ps.add("auth.jwt.jwks.url", "and auth.jwt.jwks.file are exclusive: set one")
	}
	if k.URL != "" {
		if err := JWKSURLProblem(k.URL); err != "" {
			ps.add("auth.jwt.jwks.url", "%s", err)
		}
	}
	if k.CAFile != "" && !strings.HasPrefix(k.URL, "https://") {
		ps.add("auth.jwt.jwks.ca_file", "is only used with an https:// auth.jwt.jwks.url")
	}
	// An identity provider signs every service's tokens with the keys it
	// publishes: only the audience says a token is for orderly.
	if strings.TrimSpace(j.Audience) == "" {
		ps.add("auth.jwt.audience", "must be set with auth.jwt.jwks: the identity provider signs other services' tokens with the same keys, and only the audience says a token is for orderly")
	}
	ps.positive("auth.jwt.jwks.refresh", k.Refresh)
	// The floor is what stands between tokens with made-up kids and the
	// identity provider.
	ps.positive("auth.jwt.jwks.min_refresh", k.MinRefresh)
	ps.atLeast("auth.jwt.jwks.min_refresh", k.MinRefresh, time.Second)
	if k.MinRefresh > k.Refresh && k.Refresh > 0 {
		ps.add("auth.jwt.jwks.min_refresh", "%s is more than auth.jwt.jwks.refresh (%s)", k.MinRefresh, k.Refresh)
	}
	ps.positive("auth.jwt.jwks.max_stale", k.MaxStale)
	if k.MaxStale < k.Refresh && k.MaxStale > 0 {
		ps.add("auth.jwt.jwks.max_stale", "%s is less than auth.jwt.jwks.refresh (%s)", k.MaxStale, k.Refresh)
	}
	ps.positive("auth.jwt.jwks.timeout", k.Timeout)
	if k.Timeout > MaxJWKSTimeout {
		ps.add("auth.jwt.jwks.timeout", "%s is more than %s: a request with a new key id waits this long", k.Timeout, MaxJWKSTimeout)
	}
}

// JWKSURLProblem says what is wrong with a key set URL, or "": it must be
// https://, or http:// to a loopback host (a key set read in clear from
// elsewhere is whatever the network says it is), with a host and no
// user information (it would be logged) nor fragment.
func JWKSURLProblem(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "is not a URL"
	}
	if u.Host == "" || u.Hostname() == "" {
		return "needs a host (https://idp.example/.well-known/jwks.json)"
	}
	if u.User != nil {
		return "must not hold user information: it would be logged"
	}
	if u.Fragment != "" || u.RawFragment != "" {
		return "must not have a fragment"
	}
	switch u.Scheme {
	case "https":
		return ""
	case "http":
		h := u.Hostname()
		if h == "localhost" {
			return ""
		}
		if ip, err := netip.ParseAddr(h); err == nil && ip.IsLoopback() {
			return ""
		}
		return "must be https:// (http:// only to a loopback host): keys fetched in clear are whatever the network says"
	}
	return "must be https:// (http:// only to a loopback host)"
}

func (c Config) validatePolicy(ps *problems) {
	names := map[string]bool{}
	for i, r := range c.Policy {
		key := fmt.Sprintf("policy[%d]", i)
		switch {
		case strings.TrimSpace(r.Name) == "":
			ps.add(key+".name", "must be set (decisions record the rules that matched by name)")
		case names[r.Name]:
			ps.add(key+".name", "%q is used by another rule", r.Name)
		}
		names[r.Name] = true
		if len(r.Principals) == 0 && len(r.Roles) == 0 {
			ps.add(key, `must name principals or roles it applies to ("*" in principals: every authenticated principal)`)
		}
		for j, h := range r.Hosts {
			if _, err := path.Match(h, ""); err != nil || h == "" {
				ps.add(fmt.Sprintf("%s.hosts[%d]", key, j), "%q is not a valid glob", h)
			}
		}
		ps.regexes(key+".allow", r.Allow)
		ps.regexes(key+".deny", r.Deny)
		// "" and "default" mean the worker's default user, "*" any user.
		ps.users(key+".run_as", r.RunAs, "", "default", "*")
		ps.nonNegative(key+".max_timeout", r.MaxTimeout)
	}
}
