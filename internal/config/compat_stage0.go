package config

import (
	"net"
	"strings"
	"time"

	"github.com/orderly-run/orderly/internal/order"
)

// Stage0Compat is the stage0 runbook API surface: /api/runbooks...,
// /api/config, /api/shutdown and /dev-login, over the runbooks of
// runbooks.dir (docs/compat.md).
type Stage0Compat struct {
	Enabled bool `koanf:"enabled"`
	// Prefix is where /api/... is mounted (stage0's /api).
	Prefix string `koanf:"prefix"`
	// Hosts are the worker hosts runs go to: each run goes to the first
	// one not running a runbook of its chain, so a chain of sub-runbooks
	// (stage0 clients name no host) can be as deep as the list is long.
	// Empty means runbooks.host.
	Hosts []string `koanf:"hosts"`
	// JWTSecret, JWTIssuer and JWTAudience are stage0's JWT_SECRET,
	// JWT_ISSUER and JWT_AUDIENCE: HMAC tokens with both claims required.
	JWTSecret   Secret `koanf:"jwt_secret"`
	JWTIssuer   string `koanf:"jwt_issuer"`
	JWTAudience string `koanf:"jwt_audience"`
	// JWTAlgorithm is stage0's JWT_ALGORITHM, the one algorithm its tokens
	// are signed with and /dev-login signs with: HS256 (stage0's default),
	// HS384 or HS512. PyJWT took any it knew, but stage0 verified with the
	// one secret, so only the HMAC ones ever worked.
	JWTAlgorithm string `koanf:"jwt_algorithm"`
	// JWTTTL is the lifetime of /dev-login tokens (JWT_TTL_MINUTES).
	JWTTTL time.Duration `koanf:"jwt_ttl"`
	// EnableLogin serves POST /dev-login (ENABLE_LOGIN), which mints a
	// token with any roles for anyone: refused unless listen is loopback.
	EnableLogin bool `koanf:"enable_login"`
	// Shutdown serves POST /api/shutdown, which stops this API process;
	// off, the route answers 404 like a route that does not exist.
	Shutdown bool `koanf:"shutdown"`
	// PrincipalPrefix starts the principal name of a stage0 token ("stage0:"
	// + sub), so it never collides with another identity's principals.
	PrincipalPrefix string `koanf:"principal_prefix"`
}

// stage0DefaultSecret is stage0's shipped JWT_SECRET, which stage0 itself
// refused to start with.
const stage0DefaultSecret = "dev-secret-change-me"

// DefaultStage0Compat is the surface off, at stage0's paths and JWT
// settings.
func DefaultStage0Compat() Stage0Compat {
	return Stage0Compat{Prefix: "/api", JWTIssuer: "dev-idp", JWTAudience: "dev-api", JWTAlgorithm: "HS256", JWTTTL: 480 * time.Minute,
		PrincipalPrefix: "stage0:"}
}

func (c Config) validateStage0(ps *problems) {
	s := c.Compat.Stage0
	if !s.Enabled {
		return
	}
	if !strings.HasPrefix(s.Prefix, "/") || s.Prefix == "/" {
		ps.add("compat.stage0.prefix", "must start with / and not be / itself")
	}
	if c.Runbooks.Dir == "" {
		ps.add("compat.stage0.enabled", "needs runbooks.dir")
	}
	if len(s.JWTSecret) < 32 || s.JWTSecret == stage0DefaultSecret {
		ps.add("compat.stage0.jwt_secret", "must be set, at least 32 bytes, and not stage0's default")
	}
	if s.JWTIssuer == "" || s.JWTAudience == "" {
		ps.add("compat.stage0.jwt_issuer", "jwt_issuer and jwt_audience must be set (stage0 required both claims)")
	}
	switch s.JWTAlgorithm {
	case "HS256", "HS384", "HS512":
	default:
		ps.add("compat.stage0.jwt_algorithm", "%q must be HS256, HS384 or HS512 (stage0 verified its tokens with the one shared secret)", s.JWTAlgorithm)
	}
	ps.positive("compat.stage0.jwt_ttl", s.JWTTTL)
	if s.PrincipalPrefix == "" {
		ps.add("compat.stage0.principal_prefix", "must be set, so stage0 principals never collide with others")
	}
	if s.EnableLogin && !loopback(c.Listen) {
		ps.add("compat.stage0.enable_login", "/dev-login mints tokens with any roles for anyone: listen %q must be a loopback address", c.Listen)
	}
	for _, h := range s.Hosts {
		if !order.ValidHost(h) {
			ps.add("compat.stage0.hosts", "%q must be a host id of [A-Za-z0-9_-]", h)
		}
	}
	if len(s.Hosts) == 0 && c.Runbooks.Host == "" {
		ps.add("compat.stage0.hosts", "name at least one host, or set runbooks.host ("+serveHostHint+")")
	}
}

// loopback reports whether addr (host:port) listens on loopback only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && LoopbackHost(host)
}

// LoopbackHost reports whether host (a name or an address, no port)
// names this machine's loopback.
func LoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
