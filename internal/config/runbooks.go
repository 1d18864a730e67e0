package config

import (
	"net/url"
	"path/filepath"
	"time"

	"github.com/orderly-run/orderly/internal/order"
)

// Runbooks configures markdown runbooks (docs/runbooks.md): where the API
// reads them, where they run, and what the worker lets their scripts use.
type Runbooks struct {
	// Dir is the directory of runbook files; empty turns /v1/runbooks off
	// (404 on every route).
	Dir string `koanf:"dir"`
	// Host is the worker host a run goes to when the request names none.
	Host string `koanf:"host"`
	// Timeout is a run's timeout when the request names none (stage0's
	// SCRIPT_TIMEOUT_SECONDS); limits.max_timeout and policy caps apply.
	Timeout time.Duration `koanf:"timeout"`
	// MaxDepth bounds a chain of sub-runbooks (stage0's MAX_RECURSION_DEPTH).
	MaxDepth int `koanf:"max_depth"`
	// MaxInputBytes caps what one run carries through PostgreSQL and NATS:
	// the script and its input files together. The API and each worker
	// enforce it.
	MaxInputBytes int64 `koanf:"max_input_bytes"`
	// Interpreters is what a worker lets a script's #! line choose; the
	// default interpreter is /bin/zsh when present, else /bin/sh.
	Interpreters []string `koanf:"interpreters"`
	// APIURL is the base URL scripts call for sub-runbooks (RUNBOOK_URL is
	// APIURL + "/v1/runbooks"); empty means the URL the request came in on.
	APIURL string `koanf:"api_url"`
}

// DefaultRunbooks is runbooks off, with stage0's limits.
func DefaultRunbooks() Runbooks {
	return Runbooks{
		Timeout:       600 * time.Second,
		MaxDepth:      50,
		MaxInputBytes: 8 << 20,
		Interpreters:  []string{"/bin/zsh", "/usr/bin/zsh", "/bin/sh", "/usr/bin/sh", "/bin/bash", "/usr/bin/bash"},
	}
}

func (c Config) validateRunbooks(ps *problems) {
	r := c.Runbooks
	if r.Dir != "" && !filepath.IsAbs(r.Dir) {
		ps.add("runbooks.dir", "%q must be an absolute path", r.Dir)
	}
	if r.Host != "" && !order.ValidHost(r.Host) {
		ps.add("runbooks.host", "%q must be 1-128 characters of [A-Za-z0-9_-]", r.Host)
	}
	ps.positive("runbooks.timeout", r.Timeout)
	ps.atLeastOne("runbooks.max_depth", int64(r.MaxDepth))
	ps.atLeastOne("runbooks.max_input_bytes", r.MaxInputBytes)
	for _, p := range r.Interpreters {
		if !filepath.IsAbs(p) || filepath.Clean(p) != p {
			ps.add("runbooks.interpreters", "%q must be a clean absolute path", p)
		}
	}
	if r.APIURL != "" {
		if u, err := url.Parse(r.APIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			ps.add("runbooks.api_url", "%q must be an http or https URL", r.APIURL)
		}
	}
}
