package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/orderly-run/orderly/internal/order"
)

// Compat configures the drop-in surfaces for clients of the tools orderly
// replaces (api/compat, docs/compat.md). Each is off by default; every
// request on one becomes an ordinary order on Host.
type Compat struct {
	HTTPExec HTTPExecCompat `koanf:"httpexec"`
	Vigrid   VigridCompat   `koanf:"vigrid"`
	Stage0   Stage0Compat   `koanf:"stage0"` // compat_stage0.go
}

// HTTPExecCompat is the httpexec surface: POST /<command path>.
type HTTPExecCompat struct {
	Enabled bool `koanf:"enabled"`
	// Prefix is where the surface is mounted; "/" is httpexec's own paths,
	// served only where no native route matches.
	Prefix string `koanf:"prefix"`
	// Host is the worker host its orders run on.
	Host string `koanf:"host"`
	// ExecRoot and FollowLinks are httpexec's EXEC_ROOT and FOLLOW_LINKS.
	ExecRoot    string `koanf:"exec_root"`
	FollowLinks bool   `koanf:"follow_links"`
	// Principal is who every request acts as: httpexec had no
	// authentication, so acl.allow must restrict who can reach it.
	Principal string   `koanf:"principal"`
	Roles     []string `koanf:"roles"`
}

// VigridCompat is the Vigrid Shell API surface: /api/v1/...
type VigridCompat struct {
	Enabled bool   `koanf:"enabled"`
	Prefix  string `koanf:"prefix"`
	Host    string `koanf:"host"`
	// DryRun makes every execute a dry run, as Vigrid's dry_run.
	DryRun bool `koanf:"dry_run"`
	// MaxWait bounds how long a synchronous execute waits for its order;
	// past it the order is canceled and the answer is a timeout's.
	MaxWait time.Duration `koanf:"max_wait"`
	// IntegrityCheck answers 503 while the config file differs from the
	// loaded one (Vigrid's tamper check); reload clears it.
	IntegrityCheck bool `koanf:"integrity_check"`
	// Users maps a principal to the Unix user its commands run as (a
	// Vigrid token's user); a principal not listed runs as DefaultUser.
	Users       map[string]string `koanf:"users"`
	DefaultUser string            `koanf:"default_user"`
}

// DefaultCompat is every surface off, mounted at the original's paths.
func DefaultCompat() Compat {
	return Compat{
		HTTPExec: HTTPExecCompat{Prefix: "/"},
		Vigrid:   VigridCompat{Prefix: "/api/v1", MaxWait: 5 * time.Minute, IntegrityCheck: true},
		Stage0:   DefaultStage0Compat(),
	}
}

// DefaultCompatHosts gives the compat surfaces and runbook runs that name
// no host the worker host host: orderly serve's own, whose worker runs in
// the same process. The tools they stand in for ran commands on their own
// machine, so their clients name no host, and on serve there is one
// obvious one. A host the config names wins; stage0 takes host only when
// neither compat.stage0.hosts nor runbooks.host names one, and
// runbooks.host (where a run that names no host goes) only when it is
// empty. orderly api, which has no worker of its own, does not call it:
// there only the config says where the workers run.
func (c *Config) DefaultCompatHosts(host string) {
	if c.Compat.HTTPExec.Host == "" {
		c.Compat.HTTPExec.Host = host
	}
	if c.Compat.Vigrid.Host == "" {
		c.Compat.Vigrid.Host = host
	}
	if len(c.Compat.Stage0.Hosts) == 0 && c.Runbooks.Host == "" {
		c.Compat.Stage0.Hosts = []string{host}
	}
	if c.Runbooks.Host == "" {
		c.Runbooks.Host = host
	}
}

// serveHostHint says which host id a newcomer means where no host is
// filled in (orderly api): serve's, as serve itself would have taken.
const serveHostHint = "with orderly serve, its own: --host or host, the short hostname when unset"

// validateCompat checks the compat surfaces. The httpexec surface runs
// commands for anyone who reaches it, so it is refused unless acl.allow
// names who may.

func (c Config) validateCompat(ps *problems) {
	h := c.Compat.HTTPExec
	if h.Enabled {
		if h.Principal == "" {
			ps.add("compat.httpexec.principal", "must name the principal unauthenticated httpexec requests act as")
		}
		if !strings.HasPrefix(h.Prefix, "/") {
			ps.add("compat.httpexec.prefix", "must start with /")
		}
		if h.Host == "" {
			ps.add("compat.httpexec.host", "must name the worker host that runs the commands ("+serveHostHint+")")
		} else if !order.ValidHost(h.Host) {
			ps.add("compat.httpexec.host", "%q must be a host id of [A-Za-z0-9_-]", h.Host)
		}
		if !strings.HasPrefix(h.ExecRoot, "/") {
			ps.add("compat.httpexec.exec_root", "must be an absolute path (httpexec's EXEC_ROOT)")
		}
		if len(c.ACL.Allow) == 0 {
			ps.add("compat.httpexec.enabled", "needs acl.allow: httpexec requests are unauthenticated, so the network must say who may send them")
		}
		for _, a := range c.ACL.Allow {
			if p, err := netip.ParsePrefix(strings.TrimSpace(a)); err == nil && p.Bits() == 0 {
				ps.add("compat.httpexec.enabled", "acl.allow %q admits every address; httpexec requests are unauthenticated", a)
			}
		}
	}
	v := c.Compat.Vigrid
	if v.Enabled {
		if !strings.HasPrefix(v.Prefix, "/") || v.Prefix == "/" {
			ps.add("compat.vigrid.prefix", "must start with / and not be / itself")
		}
		if v.Host == "" {
			ps.add("compat.vigrid.host", "must name the worker host whose queue the surface runs ("+serveHostHint+")")
		} else if !order.ValidHost(v.Host) {
			ps.add("compat.vigrid.host", "%q must be a host id of [A-Za-z0-9_-]", v.Host)
		}
		ps.positive("compat.vigrid.max_wait", v.MaxWait)
		if v.DefaultUser != "" {
			ps.users("compat.vigrid.default_user", []string{v.DefaultUser})
		}
		for p, u := range v.Users {
			ps.users("compat.vigrid.users."+p, []string{u})
		}
	}
}

// Principal names other kinds of credential hold: every JWT's starts with
// jwtPrefix (auth.JWTPrefix), and serve keeps its own admin token, in
// PostgreSQL, under runtimeAdmin.
const (
	jwtPrefix    = "jwt:"
	runtimeAdmin = "admin"
)

// validatePrincipalSources keeps each principal name to one kind of
// credential, as auth does for JWTs (a token name may not start with
// jwt:). A principal is what orders, read scoping, cancel rights, policy
// rules, idempotency keys and rate limits are keyed by: httpexec's
// unauthenticated requests acting as a token's principal would get every
// policy rule naming that token, and its holder their orders; a stage0
// prefix that a token's name, a JWT's or serve's admin starts with lets
// whoever holds the stage0 secret (or, on loopback, /dev-login) mint
// that principal.
func (c Config) validatePrincipalSources(ps *problems) {
	s := c.Compat.Stage0
	stage0 := s.Enabled && s.PrincipalPrefix != ""
	if stage0 {
		if strings.HasPrefix(s.PrincipalPrefix, jwtPrefix) || strings.HasPrefix(jwtPrefix, s.PrincipalPrefix) {
			ps.add("compat.stage0.principal_prefix", "%q overlaps jwt:, which starts the principals of auth.jwt's tokens", s.PrincipalPrefix)
		} else if strings.HasPrefix(runtimeAdmin, s.PrincipalPrefix) {
			ps.add("compat.stage0.principal_prefix", "%q would let a stage0 token be %s, serve's admin token", s.PrincipalPrefix, runtimeAdmin)
		}
		if j := c.Auth.JWT; strings.EqualFold(j.Algorithm, "HS256") && j.Secret != "" && j.Secret == s.JWTSecret {
			// Every stage0 token, /dev-login's included, would be
			// auth.jwt's too: a principal jwt:<sub> on every route.
			ps.add("compat.stage0.jwt_secret", "is auth.jwt.secret: a stage0 token would be a JWT of the native API too; give each its own secret")
		}
		if j := c.Auth.JWT; strings.EqualFold(j.Algorithm, "HS256") && j.PreviousSecret != "" && j.PreviousSecret == s.JWTSecret {
			ps.add("compat.stage0.jwt_secret", "is auth.jwt.previous_secret: a stage0 token would be a JWT of the native API too; give each its own secret")
		}
		for i, t := range c.Auth.Tokens {
			if strings.HasPrefix(t.Name, s.PrincipalPrefix) {
				ps.add(fmt.Sprintf("auth.tokens[%d].name", i), "%q starts with compat.stage0.principal_prefix %q: a stage0 token could be this token's principal", t.Name, s.PrincipalPrefix)
			}
		}
	}
	h := c.Compat.HTTPExec
	if !h.Enabled || h.Principal == "" {
		return
	}
	const key = "compat.httpexec.principal"
	switch {
	case strings.HasPrefix(h.Principal, jwtPrefix):
		ps.add(key, "%q starts with jwt:, which names the principals of JWTs", h.Principal)
	case stage0 && strings.HasPrefix(h.Principal, s.PrincipalPrefix):
		ps.add(key, "%q starts with compat.stage0.principal_prefix %q, which names stage0 tokens' principals", h.Principal, s.PrincipalPrefix)
	case h.Principal == runtimeAdmin || slices.ContainsFunc(c.Auth.Tokens, func(t Token) bool { return t.Name == h.Principal }):
		ps.add(key, "%q is a token's principal: unauthenticated httpexec requests would get its policy rules and its orders; name one of its own", h.Principal)
	}
}
