package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateNamesTheKey(t *testing.T) {
	hash := strings.Repeat("ab", 32)
	tests := []struct {
		name   string
		mutate func(*Config)
		key    string
	}{
		{"listen unparsable", func(c *Config) { c.Listen = "localhost" }, "listen"},
		{"jwt secret without algorithm", func(c *Config) { c.Auth.JWT.Secret = Secret(strings.Repeat("s", 40)) }, "auth.jwt.algorithm"},
		// RFC 8725 §3.9: an identity provider signs for every service it
		// serves with one key; without an audience, their tokens are ours.
		{"jwt RS256 without audience", func(c *Config) {
			c.Auth.JWT = JWT{Algorithm: "RS256", PublicKey: "/etc/jwt.pem", RolesClaim: "roles", NameClaim: "sub"}
		}, "auth.jwt.audience"},
		{"jwt EdDSA without audience", func(c *Config) {
			c.Auth.JWT = JWT{Algorithm: "EdDSA", PublicKey: "/etc/jwt.pem", Issuer: "https://sso.example", RolesClaim: "roles", NameClaim: "sub"}
		}, "auth.jwt.audience"},
		{"action env denied", func(c *Config) {
			c.Actions.Definitions = []Action{{Name: "a", Command: []string{"true"}, Env: []ActionEnv{{Name: "HOME", Value: "/x"}, {Name: "ld_preload", Value: "{lib}"}}}}
		}, "actions.definitions[0].env[1].name"},
		{"action env PATH", func(c *Config) {
			c.Actions.Definitions = []Action{{Name: "a", Command: []string{"true"}, Env: []ActionEnv{{Name: "PATH", Value: "/tmp"}}}}
		}, "actions.definitions[0].env[0].name"},
		{"action timeout", func(c *Config) {
			c.Actions.Definitions = []Action{{Name: "a", Command: []string{"true"}, Timeout: 100 * time.Hour}}
		}, "actions.definitions[0].timeout"},
		{"listen bad port", func(c *Config) { c.Listen = "127.0.0.1:http-ish" }, "listen"},
		{"listen empty", func(c *Config) { c.Listen = "" }, "listen"},
		{"host not a subject token", func(c *Config) { c.Host = "web.3" }, "host"},
		{"host wildcard", func(c *Config) { c.Host = "*" }, "host"},
		{"retention zero", func(c *Config) { c.Retention = 0 }, "retention"},
		{"check interval", func(c *Config) { c.ConfigCheckInterval = -time.Second }, "config_check_interval"},
		{"negative memory limit", func(c *Config) { c.MemoryLimitBytes = -1 }, "memory_limit_bytes"},
		{"tiny memory limit", func(c *Config) { c.MemoryLimitBytes = 1 << 20 }, "memory_limit_bytes"},
		{"nats listen", func(c *Config) { c.NATS.Listen = "4222" }, "nats.listen"},
		{"nats replicas", func(c *Config) { c.NATS.Replicas = 0 }, "nats.replicas"},
		{"nats dedup window", func(c *Config) { c.NATS.DedupWindow = time.Minute }, "nats.dedup_window"},
		{"nats ack wait", func(c *Config) { c.NATS.AckWait = 0 }, "nats.ack_wait"},
		{"nats heartbeat vs lease", func(c *Config) { c.NATS.Heartbeat = c.NATS.LeaseTTL }, "nats.heartbeat"},
		{"nats heartbeat near the lease", func(c *Config) { c.NATS.Heartbeat, c.NATS.LeaseTTL = 14*time.Second, 15*time.Second }, "nats.heartbeat"},
		{"nats heartbeat past a third of the lease", func(c *Config) { c.NATS.Heartbeat, c.NATS.LeaseTTL = 5001*time.Millisecond, 15*time.Second }, "nats.heartbeat"},
		// A nanosecond is positive, and the period of a tight loop.
		{"nats heartbeat tiny", func(c *Config) { c.NATS.Heartbeat = time.Nanosecond }, "nats.heartbeat"},
		{"check interval tiny", func(c *Config) { c.ConfigCheckInterval = time.Nanosecond }, "config_check_interval"},
		{"log format", func(c *Config) { c.Log.Format = "xml" }, "log.format"},
		{"log level", func(c *Config) { c.Log.Level = "loud" }, "log.level"},
		{"http read timeout", func(c *Config) { c.HTTP.ReadTimeout = 0 }, "http.read_timeout"},
		{"http body", func(c *Config) { c.HTTP.MaxBodyBytes = 0 }, "http.max_body_bytes"},
		{"http tls half", func(c *Config) { c.HTTP.TLSCert = "/etc/cert.pem" }, "http.tls_cert"},
		{"nats client certificate without its key", func(c *Config) { c.NATS.TLSCert = "/etc/nats-client.crt" }, "nats.tls_key"},
		{"nats client key without its certificate", func(c *Config) { c.NATS.TLSKey = "/etc/nats-client.key" }, "nats.tls_cert"},
		{"command_path relative", func(c *Config) { c.Worker.CommandPath = []string{"/bin", "bin"} }, "worker.command_path[1]"},
		{"command_path colon list", func(c *Config) { c.Worker.CommandPath = []string{"/usr/bin:/bin"} }, "worker.command_path[0]"},
		{"command_path empty", func(c *Config) { c.Worker.CommandPath = nil }, "worker.command_path"},
		{"exec_root relative", func(c *Config) { c.Worker.ExecRoot = "srv" }, "worker.exec_root"},
		{"worker allow regex", func(c *Config) { c.Worker.Allow = []string{"^ls", "(["} }, "worker.allow[1]"},
		{"worker deny regex", func(c *Config) { c.Worker.Deny = []string{"(?<=x)"} }, "worker.deny[0]"},
		{"worker user", func(c *Config) { c.Worker.AllowedUsers = []string{"root;id"} }, "worker.allowed_users[0]"},
		{"worker default user", func(c *Config) { c.Worker.DefaultUser = "Bad User" }, "worker.default_user"},
		{"env_deny", func(c *Config) { c.Worker.EnvDeny = []string{"LD-*"} }, "worker.env_deny[0]"},
		{"kill grace", func(c *Config) { c.Worker.KillGrace = 0 }, "worker.kill_grace"},
		{"max output", func(c *Config) { c.Worker.MaxOutputBytes = -1 }, "worker.max_output_bytes"},
		{"cgroup", func(c *Config) { c.Worker.Cgroup = "yes" }, "worker.cgroup"},
		{"limits max_args", func(c *Config) { c.Limits.MaxArgs = 0 }, "limits.max_args"},
		{"limits max_env_bytes", func(c *Config) { c.Limits.MaxEnvBytes = 0 }, "limits.max_env_bytes"},
		{"limits timeouts", func(c *Config) { c.Limits.DefaultTimeout = 2 * c.Limits.MaxTimeout }, "limits.default_timeout"},
		{"limits rate", func(c *Config) { c.Limits.RatePerIP = -1 }, "limits.rate_per_ip"},
		{"token hash short", func(c *Config) { c.Auth.Tokens = []Token{{Name: "a", SHA256: "abc"}} }, "auth.tokens[0].sha256"},
		{"token hash not hex", func(c *Config) { c.Auth.Tokens = []Token{{Name: "a", SHA256: strings.Repeat("zz", 32)}} }, "auth.tokens[0].sha256"},
		{"token duplicate hash", func(c *Config) {
			c.Auth.Tokens = []Token{{Name: "a", SHA256: hash}, {Name: "b", SHA256: strings.ToUpper(hash)}}
		}, "auth.tokens[1].sha256"},
		{"token duplicate name", func(c *Config) {
			c.Auth.Tokens = []Token{{Name: "a", SHA256: hash}, {Name: "a", SHA256: strings.Repeat("cd", 32)}}
		}, "auth.tokens[1].name"},
		{"token no name", func(c *Config) { c.Auth.Tokens = []Token{{SHA256: hash}} }, "auth.tokens[0].name"},
		{"token previous hash not hex", func(c *Config) {
			c.Auth.Tokens = []Token{{Name: "a", SHA256: hash, PreviousSHA256: "abc"}}
		}, "auth.tokens[0].previous_sha256"},
		{"token previous hash is its own", func(c *Config) {
			c.Auth.Tokens = []Token{{Name: "a", SHA256: hash, PreviousSHA256: strings.ToUpper(hash)}}
		}, "auth.tokens[0].previous_sha256"},
		{"token previous hash is another token's", func(c *Config) {
			c.Auth.Tokens = []Token{{Name: "a", SHA256: strings.Repeat("cd", 32)}, {Name: "b", SHA256: hash, PreviousSHA256: strings.Repeat("cd", 32)}}
		}, "auth.tokens[1].previous_sha256"},
		{"jwt algorithm", func(c *Config) { c.Auth.JWT.Algorithm = "none" }, "auth.jwt.algorithm"},
		{"jwt lowercase algorithm", func(c *Config) { c.Auth.JWT.Algorithm = "hs256" }, "auth.jwt.algorithm"},
		{"jwt hs256 without secret", func(c *Config) { c.Auth.JWT.Algorithm = "HS256" }, "auth.jwt.secret"},
		{"jwt hs256 short secret", func(c *Config) { c.Auth.JWT.Algorithm, c.Auth.JWT.Secret = "HS256", "short" }, "auth.jwt.secret"},
		{"jwt rs256 without key", func(c *Config) { c.Auth.JWT.Algorithm = "RS256" }, "auth.jwt.public_key"},
		{"jwt eddsa without key", func(c *Config) { c.Auth.JWT.Algorithm = "EdDSA" }, "auth.jwt.public_key"},
		{"jwt leeway beyond the cap", func(c *Config) {
			c.Auth.JWT.Algorithm, c.Auth.JWT.Secret, c.Auth.JWT.Leeway = "HS256", Secret(strings.Repeat("s", 40)), MaxJWTLeeway+time.Second
		}, "auth.jwt.leeway"},
		{"jwt previous secret without algorithm", func(c *Config) { c.Auth.JWT.PreviousSecret = Secret(strings.Repeat("p", 40)) }, "auth.jwt.algorithm"},
		{"jwt previous secret short", func(c *Config) {
			c.Auth.JWT.Algorithm, c.Auth.JWT.Secret, c.Auth.JWT.PreviousSecret = "HS256", Secret(strings.Repeat("s", 40)), "short"
		}, "auth.jwt.previous_secret"},
		{"jwt previous secret is the secret", func(c *Config) {
			c.Auth.JWT.Algorithm, c.Auth.JWT.Secret, c.Auth.JWT.PreviousSecret = "HS256", Secret(strings.Repeat("s", 40)), Secret(strings.Repeat("s", 40))
		}, "auth.jwt.previous_secret"},
		{"jwt previous public key with HS256", func(c *Config) {
			c.Auth.JWT.Algorithm, c.Auth.JWT.Secret, c.Auth.JWT.PreviousPublicKey = "HS256", Secret(strings.Repeat("s", 40)), "/etc/old.pem"
		}, "auth.jwt.previous_public_key"},
		{"jwt previous secret with EdDSA", func(c *Config) {
			c.Auth.JWT.Algorithm, c.Auth.JWT.PublicKey, c.Auth.JWT.Audience, c.Auth.JWT.PreviousSecret = "EdDSA", "/etc/jwt.pem", "orderly", Secret(strings.Repeat("p", 40))
		}, "auth.jwt.previous_secret"},
		{"jwt max_lifetime zero", func(c *Config) {
			c.Auth.JWT.Algorithm, c.Auth.JWT.Secret, c.Auth.JWT.MaxLifetime = "HS256", Secret(strings.Repeat("s", 40)), 0
		}, "auth.jwt.max_lifetime"},
		{"jwks http to a non-loopback host", func(c *Config) {
			c.Auth.JWT.JWKS.URL, c.Auth.JWT.Audience = "http://idp.example/jwks.json", "orderly"
		}, "auth.jwt.jwks.url"},
		{"jwks url with user information", func(c *Config) {
			c.Auth.JWT.JWKS.URL, c.Auth.JWT.Audience = "https://u:p@idp.example/jwks.json", "orderly"
		}, "auth.jwt.jwks.url"},
		{"jwks url and file", func(c *Config) {
			c.Auth.JWT.JWKS.URL, c.Auth.JWT.JWKS.File, c.Auth.JWT.Audience = "https://idp.example/jwks.json", "/etc/jwks.json", "orderly"
		}, "auth.jwt.jwks.url"},
		{"jwks with an algorithm", func(c *Config) {
			c.Auth.JWT.JWKS.File, c.Auth.JWT.Audience, c.Auth.JWT.Algorithm, c.Auth.JWT.Secret = "/etc/jwks.json", "orderly", "HS256", Secret(strings.Repeat("s", 40))
		}, "auth.jwt.jwks"},
		{"jwks without audience", func(c *Config) { c.Auth.JWT.JWKS.URL = "https://idp.example/jwks.json" }, "auth.jwt.audience"},
		{"jwks ca_file with a file", func(c *Config) {
			c.Auth.JWT.JWKS.File, c.Auth.JWT.JWKS.CAFile, c.Auth.JWT.Audience = "/etc/jwks.json", "/etc/ca.pem", "orderly"
		}, "auth.jwt.jwks.ca_file"},
		{"jwks min_refresh over refresh", func(c *Config) {
			c.Auth.JWT.JWKS.File, c.Auth.JWT.Audience, c.Auth.JWT.JWKS.MinRefresh = "/etc/jwks.json", "orderly", time.Hour
		}, "auth.jwt.jwks.min_refresh"},
		{"jwks min_refresh under a second", func(c *Config) {
			c.Auth.JWT.JWKS.File, c.Auth.JWT.Audience, c.Auth.JWT.JWKS.MinRefresh = "/etc/jwks.json", "orderly", time.Millisecond
		}, "auth.jwt.jwks.min_refresh"},
		{"jwks timeout too long", func(c *Config) {
			c.Auth.JWT.JWKS.File, c.Auth.JWT.Audience, c.Auth.JWT.JWKS.Timeout = "/etc/jwks.json", "orderly", time.Minute
		}, "auth.jwt.jwks.timeout"},
		{"jwks leeway too long", func(c *Config) {
			c.Auth.JWT.JWKS.File, c.Auth.JWT.Audience, c.Auth.JWT.Leeway = "/etc/jwks.json", "orderly", time.Hour
		}, "auth.jwt.leeway"},
		{"acl allow zoned ip", func(c *Config) { c.ACL.Allow = []string{"10.0.0.0/8", "fe80::1%eth0"} }, "acl.allow[1]"},
		{"acl allow short mapped prefix", func(c *Config) { c.ACL.Allow = []string{"::ffff:10.0.0.0/8"} }, "acl.allow[0]"},
		{"acl deny garbage", func(c *Config) { c.ACL.Deny = []string{"everyone"} }, "acl.deny[0]"},
		{"acl proxies", func(c *Config) { c.ACL.TrustedProxies = []string{"10.0.0.0/33"} }, "acl.trusted_proxies[0]"},
		{"policy allow regex", func(c *Config) { c.Policy = []Rule{{Name: "r", Roles: []string{"x"}, Allow: []string{"+"}}} }, "policy[0].allow[0]"},
		{"policy deny regex", func(c *Config) {
			c.Policy = []Rule{{Name: "a", Roles: []string{"x"}}, {Name: "b", Roles: []string{"x"}, Deny: []string{"a{2,1}"}}}
		}, "policy[1].deny[0]"},
		{"policy no subject", func(c *Config) { c.Policy = []Rule{{Name: "r"}} }, "policy[0]"},
		{"policy no name", func(c *Config) { c.Policy = []Rule{{Roles: []string{"x"}}} }, "policy[0].name"},
		{"policy duplicate name", func(c *Config) {
			c.Policy = []Rule{{Name: "r", Roles: []string{"x"}}, {Name: "r", Roles: []string{"y"}}}
		}, "policy[1].name"},
		{"policy empty regex", func(c *Config) { c.Policy = []Rule{{Name: "r", Roles: []string{"x"}, Deny: []string{""}}} }, "policy[0].deny[0]"},
		{"policy empty host", func(c *Config) { c.Policy = []Rule{{Name: "r", Roles: []string{"x"}, Hosts: []string{""}}} }, "policy[0].hosts[0]"},
		{"policy host glob", func(c *Config) { c.Policy = []Rule{{Name: "r", Roles: []string{"x"}, Hosts: []string{"web-["}}} }, "policy[0].hosts[0]"},
		{"policy run_as", func(c *Config) { c.Policy = []Rule{{Name: "r", Roles: []string{"x"}, RunAs: []string{"../root"}}} }, "policy[0].run_as[0]"},
		{"policy max timeout", func(c *Config) { c.Policy = []Rule{{Name: "r", Roles: []string{"x"}, MaxTimeout: -1}} }, "policy[0].max_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(&c)
			err := c.Validate()
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate = %v, want a *ValidationError", err)
			}
			for _, p := range ve.Problems {
				if p.Key == tt.key {
					return
				}
			}
			t.Fatalf("no problem for key %s in %v", tt.key, err)
		})
	}
}

func TestValidateAcceptsGoodValues(t *testing.T) {
	c := Default()
	c.Listen = "[::]:8443"
	c.Host = "web_3-a"
	c.Log.Format = "syslog"
	c.Log.Level = "warn"
	c.HTTP.TLSCert, c.HTTP.TLSKey = "/etc/c.pem", "/etc/k.pem"
	c.NATS.TLSCA, c.NATS.TLSCert, c.NATS.TLSKey = "/etc/nats-ca.pem", "/etc/nats-client.crt", "/etc/nats-client.key"
	c.ACL.Allow = []string{"10.0.0.0/8", "::1/128", "192.168.1.7/32", "192.0.2.7", "::ffff:10.0.0.0/104"}
	c.Auth.Tokens = []Token{{Name: "ci", SHA256: strings.Repeat("AB", 32), PreviousSHA256: strings.Repeat("CD", 32), Roles: []string{"deploy"}}}
	c.Auth.JWT = JWT{Algorithm: "EdDSA", PublicKey: "/etc/jwt.pem", Audience: "orderly", MaxLifetime: time.Hour, RolesClaim: "roles", NameClaim: "sub"}
	c.Policy = []Rule{{Name: "r", Principals: []string{"ci"}, Hosts: []string{"web-*", "db-?"}, Allow: []string{`^ls( |$)`}, RunAs: []string{"nobody", "1000", "", "default", "*"}}, {Name: "all", Principals: []string{"*"}}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, cg := range []string{"", "off", "auto", "on", "/sys/fs/cgroup/orderly"} {
		c.Worker.Cgroup = cg
		if err := c.Validate(); err != nil {
			t.Fatalf("worker.cgroup %q: %v", cg, err)
		}
	}
	for _, limit := range []int64{0, 16 << 20, 1 << 30} {
		c.MemoryLimitBytes = limit
		if err := c.Validate(); err != nil {
			t.Fatalf("memory_limit_bytes %d: %v", limit, err)
		}
	}
}

// TestValidateJWTEd25519: RFC 9864's name for EdDSA with an Ed25519 key is
// an algorithm of its own in config, with EdDSA's checks, and the messages
// that list the algorithms name it.
func TestValidateJWTEd25519(t *testing.T) {
	c := Default()
	c.Auth.JWT = JWT{Algorithm: "Ed25519", PublicKey: "/etc/jwt.pem", Audience: "orderly", MaxLifetime: time.Hour, RolesClaim: "roles", NameClaim: "sub"}
	if err := c.Validate(); err != nil {
		t.Fatalf("Ed25519 with a key and an audience: %v", err)
	}
	c.Auth.JWT.PublicKey, c.Auth.JWT.Audience = "", ""
	err := c.Validate()
	for _, want := range []string{"auth.jwt.public_key: Ed25519 needs a PEM public key file", "auth.jwt.audience: must be set with Ed25519"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Ed25519 without key or audience: %v, want %q in it", err, want)
		}
	}
	c.Auth.JWT.Algorithm = "Ed448"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `"Ed448" must be HS256, RS256, EdDSA, Ed25519 or empty`) {
		t.Errorf("Ed448: %v", err)
	}
	c.Auth.JWT = JWT{Secret: Secret(strings.Repeat("s", 40))}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "must be set (HS256, RS256, EdDSA or Ed25519)") {
		t.Errorf("a secret without algorithm: %v", err)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Default()
	c.Listen = "nope"
	c.Log.Format = "xml"
	c.Worker.Allow = []string{"("}
	err := c.Validate()
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) != 3 {
		t.Fatalf("Validate = %v, want 3 problems", err)
	}
	for _, key := range []string{"listen:", "log.format:", "worker.allow[0]:"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error %q does not name %s", err, key)
		}
	}
}

func TestValidateDoesNotEchoSecrets(t *testing.T) {
	c := Default()
	c.Auth.Tokens = []Token{{Name: "a", SHA256: "my-raw-token-pasted-by-mistake"}}
	c.Auth.JWT = JWT{Algorithm: "HS256", Secret: "tooshort", RolesClaim: "roles", NameClaim: "sub"}
	err := c.Validate()
	if err == nil || strings.Contains(err.Error(), "my-raw-token") || strings.Contains(err.Error(), "tooshort") {
		t.Fatalf("Validate = %v", err)
	}
}

// TestPrincipalsOfOneSourceEach: a principal name belongs to one kind of
// credential. httpexec's unauthenticated requests may not act as a
// token's principal (they would get its policy rules and its orders), a
// JWT's (jwt:…) or a stage0 token's; a stage0 prefix may not mint a
// token's principal, a JWT's (jwt:) or serve's admin.
func TestPrincipalsOfOneSourceEach(t *testing.T) {
	hash := strings.Repeat("ab", 32)
	base := func() Config {
		c := Default()
		c.ACL.Allow = []string{"10.0.0.0/8"}
		c.Auth.Tokens = []Token{{Name: "ops", SHA256: hash}, {Name: "stage0:ci", SHA256: strings.Repeat("cd", 32)}}
		c.Compat.HTTPExec = HTTPExecCompat{Enabled: true, Prefix: "/", Host: "web-1", ExecRoot: "/srv/bin", Principal: "httpexec-client"}
		c.Runbooks.Dir = "/srv/runbooks"
		c.Compat.Stage0.Enabled, c.Compat.Stage0.JWTSecret = true, Secret(strings.Repeat("s", 40))
		c.Compat.Stage0.Hosts = []string{"web-1"}
		c.Compat.Stage0.PrincipalPrefix = "legacy:"
		return c
	}
	if err := base().Validate(); err != nil {
		t.Fatalf("principals of their own: %v", err)
	}
	for _, tt := range []struct {
		name   string
		mutate func(*Config)
		key    string
	}{
		{"httpexec as a token", func(c *Config) { c.Compat.HTTPExec.Principal = "ops" }, "compat.httpexec.principal"},
		{"httpexec as serve's admin", func(c *Config) { c.Compat.HTTPExec.Principal = "admin" }, "compat.httpexec.principal"},
		{"httpexec as a JWT", func(c *Config) { c.Compat.HTTPExec.Principal = "jwt:alice" }, "compat.httpexec.principal"},
		{"httpexec as a stage0 token", func(c *Config) { c.Compat.HTTPExec.Principal = "legacy:alice" }, "compat.httpexec.principal"},
		{"stage0 prefix of a token", func(c *Config) { c.Compat.Stage0.PrincipalPrefix = "stage0:" }, "auth.tokens[1].name"},
		{"stage0 prefix jwt:", func(c *Config) { c.Compat.Stage0.PrincipalPrefix = "jwt:" }, "compat.stage0.principal_prefix"},
		{"stage0 prefix j", func(c *Config) { c.Compat.Stage0.PrincipalPrefix = "j" }, "compat.stage0.principal_prefix"},
		{"stage0 prefix jwt:x", func(c *Config) { c.Compat.Stage0.PrincipalPrefix = "jwt:stage0:" }, "compat.stage0.principal_prefix"},
		{"stage0 prefix ad", func(c *Config) { c.Compat.Stage0.PrincipalPrefix = "ad" }, "compat.stage0.principal_prefix"},
		// One HS256 secret for both: every stage0 token (and every one
		// /dev-login mints) would be a JWT of auth.jwt's too.
		{"stage0 secret is auth.jwt's", func(c *Config) {
			c.Auth.JWT = JWT{Algorithm: "HS256", Secret: c.Compat.Stage0.JWTSecret, RolesClaim: "roles", NameClaim: "sub"}
		}, "compat.stage0.jwt_secret"},
		{"stage0 secret is auth.jwt's previous", func(c *Config) {
			c.Auth.JWT = JWT{Algorithm: "HS256", Secret: Secret(strings.Repeat("n", 40)), PreviousSecret: c.Compat.Stage0.JWTSecret,
				MaxLifetime: time.Hour, RolesClaim: "roles", NameClaim: "sub"}
		}, "compat.stage0.jwt_secret"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.mutate(&c)
			var ve *ValidationError
			if err := c.Validate(); !errors.As(err, &ve) || !slices.ContainsFunc(ve.Problems, func(p Problem) bool { return p.Key == tt.key }) {
				t.Fatalf("Validate = %v, want a problem for %s", err, tt.key)
			}
		})
	}
}

// TestHeartbeatIsAThirdOfTheLease: nats.heartbeat 14s against a 15s
// nats.lease_ttl passed ("shorter than the lease"), leaving a renewal
// one second to be late before a standby took the host; the bound is a
// third, the defaults' ratio, and the refusal names both keys.
func TestHeartbeatIsAThirdOfTheLease(t *testing.T) {
	c := Default()
	c.NATS.Heartbeat, c.NATS.LeaseTTL = 14*time.Second, 15*time.Second
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "nats.heartbeat: must be at most a third of nats.lease_ttl (15s, so at most 5s), got 14s") {
		t.Fatalf("a 14s heartbeat against a 15s lease: %v", err)
	}
	c.NATS.Heartbeat = 5 * time.Second
	if err := c.Validate(); err != nil {
		t.Fatalf("a 5s heartbeat against a 15s lease: %v", err)
	}
}

func TestJWKSSettingsThatAreValid(t *testing.T) {
	for _, u := range []string{"https://idp.example/.well-known/jwks.json", "http://127.0.0.1:8080/jwks", "http://localhost/jwks", "http://[::1]:9000/jwks"} {
		c := Default()
		c.Auth.JWT.JWKS.URL, c.Auth.JWT.Audience = u, "orderly"
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", u, err)
		}
		if !c.Auth.JWT.Enabled() {
			t.Errorf("%s: JWT not enabled by a key set", u)
		}
	}
	c := Default()
	c.Auth.JWT.JWKS.File, c.Auth.JWT.Audience = "/etc/orderly/jwks.json", "orderly"
	if err := c.Validate(); err != nil {
		t.Errorf("a key set file: %v", err)
	}
}

// TestCompatHostLeftOutSaysWhichHost: compat.md's examples name a fleet's
// host (web-3); a newcomer on one machine who leaves it out was told
// `"" must be a host id of [A-Za-z0-9_-]`, which names no host to write.
func TestCompatHostLeftOutSaysWhichHost(t *testing.T) {
	c := Default()
	c.ACL.Allow = []string{"127.0.0.0/8"}
	c.Compat.HTTPExec = HTTPExecCompat{Enabled: true, Prefix: "/", ExecRoot: "/srv/bin", Principal: "httpexec-client"}
	c.Compat.Vigrid.Enabled, c.Compat.Vigrid.Host = true, ""
	c.Compat.Stage0.Enabled, c.Compat.Stage0.JWTSecret, c.Compat.Stage0.Hosts = true, Secret(strings.Repeat("s", 40)), nil
	err := c.Validate()
	if err == nil {
		t.Fatal("valid without hosts")
	}
	for _, want := range []string{
		"compat.httpexec.host: must name the worker host that runs the commands (with orderly serve, its own: --host or host",
		"compat.vigrid.host: must name the worker host whose queue the surface runs (with orderly serve, its own",
		"compat.stage0.hosts: name at least one host, or set runbooks.host (with orderly serve, its own",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v\nwant it to contain %q", err, want)
		}
	}
}

// TestDefaultCompatHosts: serve's host fills only what the config leaves
// empty; stage0 keeps runbooks.host when that is set.
func TestDefaultCompatHosts(t *testing.T) {
	c := Default()
	c.DefaultCompatHosts("sv")
	if c.Compat.HTTPExec.Host != "sv" || c.Compat.Vigrid.Host != "sv" || !slices.Equal(c.Compat.Stage0.Hosts, []string{"sv"}) || c.Runbooks.Host != "sv" {
		t.Errorf("nothing named: %+v, runbooks.host %q", c.Compat, c.Runbooks.Host)
	}
	c = Default()
	c.Compat.HTTPExec.Host, c.Compat.Vigrid.Host, c.Runbooks.Host = "web-1", "web-2", "rb"
	c.DefaultCompatHosts("sv")
	if c.Compat.HTTPExec.Host != "web-1" || c.Compat.Vigrid.Host != "web-2" || c.Compat.Stage0.Hosts != nil || c.Runbooks.Host != "rb" {
		t.Errorf("hosts named: %+v, runbooks.host %q", c.Compat, c.Runbooks.Host)
	}
	c = Default()
	c.Compat.Stage0.Hosts = []string{"a", "b"}
	c.DefaultCompatHosts("sv")
	if !slices.Equal(c.Compat.Stage0.Hosts, []string{"a", "b"}) {
		t.Errorf("stage0 hosts named: %q", c.Compat.Stage0.Hosts)
	}
}
