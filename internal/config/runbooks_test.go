package config

import (
	"errors"
	"slices"
	"testing"
)

// TestValidateRunbooksAndStage0 names the key of each runbooks.* and
// compat.stage0.* problem.
func TestValidateRunbooksAndStage0(t *testing.T) {
	stage0 := func(c *Config) {
		c.Runbooks.Dir, c.Runbooks.Host = "/srv/runbooks", "web-3"
		c.Compat.Stage0.Enabled = true
		c.Compat.Stage0.JWTSecret = "0123456789abcdef0123456789abcdef"
	}
	tests := []struct {
		name   string
		mutate func(*Config)
		key    string // "" when valid
	}{
		{"runbooks off", func(c *Config) {}, ""},
		{"stage0 valid", stage0, ""},
		{"dir relative", func(c *Config) { c.Runbooks.Dir = "runbooks" }, "runbooks.dir"},
		{"host invalid", func(c *Config) { c.Runbooks.Host = "web.3" }, "runbooks.host"},
		{"timeout zero", func(c *Config) { c.Runbooks.Timeout = 0 }, "runbooks.timeout"},
		{"depth zero", func(c *Config) { c.Runbooks.MaxDepth = 0 }, "runbooks.max_depth"},
		{"input cap zero", func(c *Config) { c.Runbooks.MaxInputBytes = 0 }, "runbooks.max_input_bytes"},
		{"interpreter relative", func(c *Config) { c.Runbooks.Interpreters = []string{"sh"} }, "runbooks.interpreters"},
		{"api url", func(c *Config) { c.Runbooks.APIURL = "ftp://x" }, "runbooks.api_url"},
		{"stage0 without dir", func(c *Config) { stage0(c); c.Runbooks.Dir = "" }, "compat.stage0.enabled"},
		{"stage0 default secret", func(c *Config) { stage0(c); c.Compat.Stage0.JWTSecret = stage0DefaultSecret }, "compat.stage0.jwt_secret"},
		{"stage0 short secret", func(c *Config) { stage0(c); c.Compat.Stage0.JWTSecret = "short" }, "compat.stage0.jwt_secret"},
		{"stage0 no host", func(c *Config) { stage0(c); c.Runbooks.Host = "" }, "compat.stage0.hosts"},
		{"stage0 bad host", func(c *Config) { stage0(c); c.Compat.Stage0.Hosts = []string{"a.b"} }, "compat.stage0.hosts"},
		{"stage0 prefix root", func(c *Config) { stage0(c); c.Compat.Stage0.Prefix = "/" }, "compat.stage0.prefix"},
		{"stage0 HS512", func(c *Config) { stage0(c); c.Compat.Stage0.JWTAlgorithm = "HS512" }, ""},
		{"stage0 RS256", func(c *Config) { stage0(c); c.Compat.Stage0.JWTAlgorithm = "RS256" }, "compat.stage0.jwt_algorithm"},
		{"stage0 none", func(c *Config) { stage0(c); c.Compat.Stage0.JWTAlgorithm = "none" }, "compat.stage0.jwt_algorithm"},
		{"dev-login on loopback", func(c *Config) { stage0(c); c.Compat.Stage0.EnableLogin = true }, ""},
		{"dev-login on every address", func(c *Config) {
			stage0(c)
			c.Compat.Stage0.EnableLogin, c.Listen = true, "0.0.0.0:8080"
		}, "compat.stage0.enable_login"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(&c)
			err := c.Validate()
			if tt.key == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || !slices.ContainsFunc(ve.Problems, func(p Problem) bool { return p.Key == tt.key }) {
				t.Fatalf("Validate = %v, want a problem with %s", err, tt.key)
			}
		})
	}
}
