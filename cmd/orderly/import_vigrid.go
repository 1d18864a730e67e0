package main

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// vigridFile is a Vigrid Shell API config (docs/compat.md §Vigrid).
type vigridFile struct {
	Bind string `yaml:"bind"`
	Port *int   `yaml:"port"`
	SSL  struct {
		Enabled     bool   `yaml:"enabled"`
		Certificate string `yaml:"certificate"`
		PrivateKey  string `yaml:"private_key"`
	} `yaml:"ssl"`
	RunAs          string    `yaml:"run_as"`
	DryRun         bool      `yaml:"dry_run"`
	CommandPath    string    `yaml:"command_path"`
	ForbiddenChars yaml.Node `yaml:"forbidden_chars"`
	LogDir         string    `yaml:"log_dir"`
	LogFormat      string    `yaml:"log_format"`
	LogLevel       string    `yaml:"log_level"`
	ACL            struct {
		Deny  []string `yaml:"deny"`
		Allow []string `yaml:"allow"`
	} `yaml:"acl"`
	Tokens map[string]vigridToken `yaml:"tokens"`
}

type vigridToken struct {
	Secret        string   `yaml:"secret"`
	User          string   `yaml:"user"`
	AllowCommands []string `yaml:"allow_commands"`
	DenyCommands  []string `yaml:"deny_commands"`
}

// vigridDefaultForbidden is Vigrid's forbidden_chars when the file has none.
const vigridDefaultForbidden = "\"';\\|&(){}$`"

// importedConfig is the orderly config import writes, keys in the order
// docs/config.md lists them.
type importedConfig struct {
	Listen string         `yaml:"listen,omitempty"`
	Log    map[string]any `yaml:"log,omitempty"`
	HTTP   map[string]any `yaml:"http,omitempty"`
	Worker map[string]any `yaml:"worker"`
	Limits map[string]any `yaml:"limits,omitempty"`
	Auth   struct {
		Tokens []importedToken `yaml:"tokens"`
	} `yaml:"auth"`
	ACL    map[string][]string `yaml:"acl"`
	Policy []importedRule      `yaml:"policy"`
	Compat struct {
		Vigrid map[string]any `yaml:"vigrid"`
	} `yaml:"compat"`
}

type importedToken struct {
	Name   string `yaml:"name"`
	SHA256 string `yaml:"sha256"`
}

type importedRule struct {
	Name       string   `yaml:"name"`
	Principals []string `yaml:"principals"`
	Hosts      []string `yaml:"hosts"`
	Allow      []string `yaml:"allow"`
	Deny       []string `yaml:"deny,omitempty"`
	RunAs      []string `yaml:"run_as,omitempty"`
}

// vigridDefaultTimeout is the imported config's limits.default_timeout:
// limits.max_timeout's default, the longest an order may run.
const vigridDefaultTimeout = "24h"

// convertVigrid turns a Vigrid YAML config into an orderly config whose
// compat.vigrid surface behaves like it: each token a principal holding
// only the SHA-256 of its secret, its allow/deny regexes and user a policy
// rule, the ACL, forbidden characters and command_path the host policy,
// dry_run, TLS, listen address and log format, and a default timeout as
// long as an order may have (Vigrid had none). notes lists what could not
// be mapped. No secret appears in the output or the notes.
func convertVigrid(src []byte, name, host string) (out []byte, notes []string, err error) {
	var raw map[string]any
	if err := yaml.Unmarshal(src, &raw); err != nil {
		return nil, nil, fmt.Errorf("parse vigrid config %s: %w", name, err)
	}
	var v vigridFile
	if err := yaml.Unmarshal(src, &v); err != nil {
		return nil, nil, fmt.Errorf("parse vigrid config %s: %w", name, err)
	}
	known := []string{"bind", "port", "ssl", "run_as", "dry_run", "command_path", "forbidden_chars", "log_dir",
		"log_format", "log_level", "acl", "tokens"}
	for _, k := range sortedKeys(raw) {
		if !slices.Contains(known, k) {
			notes = append(notes, fmt.Sprintf("key %q is not a Vigrid setting orderly knows", k))
		}
	}
	var c importedConfig
	// Vigrid's own defaults when the file names neither: its clients
	// call 8443, not orderly's 8080.
	bind, port := cmp.Or(v.Bind, "0.0.0.0"), 8443
	if v.Port != nil {
		port = *v.Port
	}
	c.Listen = net.JoinHostPort(bind, strconv.Itoa(port))
	c.Log = map[string]any{}
	switch strings.ToLower(v.LogFormat) {
	case "":
	case "json", "syslog":
		c.Log["format"] = strings.ToLower(v.LogFormat)
	default:
		notes = append(notes, fmt.Sprintf("log_format %q (orderly has text, json and syslog)", v.LogFormat))
	}
	if lvl, ok := map[string]string{"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error", "CRITICAL": "error"}[strings.ToUpper(v.LogLevel)]; ok {
		c.Log["level"] = lvl
	} else if v.LogLevel != "" {
		notes = append(notes, fmt.Sprintf("log_level %q", v.LogLevel))
	}
	if v.LogDir != "" {
		notes = append(notes, fmt.Sprintf("log_dir %q: orderly logs to stderr (journald under systemd) or, with log.format syslog, to the local syslog socket; it writes no log file of its own", v.LogDir))
	}
	if v.SSL.Enabled {
		if v.SSL.Certificate != "" && v.SSL.PrivateKey != "" {
			c.HTTP = map[string]any{"tls_cert": v.SSL.Certificate, "tls_key": v.SSL.PrivateKey}
			// Vigrid served plain HTTP when the files were missing; orderly
			// refuses to start without them rather than drop TLS.
			for _, f := range []string{v.SSL.Certificate, v.SSL.PrivateKey} {
				if _, err := os.Stat(f); err != nil {
					notes = append(notes, fmt.Sprintf("ssl file %q cannot be read here (%v): Vigrid fell back to plain HTTP, "+
						"orderly refuses to start without it; copy it to this path, or remove http.tls_cert and http.tls_key", f, err))
				}
			}
		} else {
			notes = append(notes, "ssl.enabled without certificate and private_key: Vigrid fell back to plain HTTP, and so does this config")
		}
	}

	c.Worker = map[string]any{}
	if v.CommandPath != "" {
		var dirs []string
		for _, d := range strings.Split(v.CommandPath, ":") {
			if d != "" {
				dirs = append(dirs, d)
			}
		}
		c.Worker["command_path"] = dirs
	}
	forbidden, err := forbiddenOf(v.ForbiddenChars)
	if err != nil {
		return nil, nil, fmt.Errorf("vigrid forbidden_chars: %w", err)
	}
	c.Worker["forbidden_chars"] = forbidden

	// Vigrid denies every address its allow list does not name, even with
	// no list at all; orderly's empty acl.allow admits everyone, so an
	// empty Vigrid allow list becomes an explicit deny of everything.
	c.ACL = map[string][]string{}
	if len(v.ACL.Deny) > 0 {
		c.ACL["deny"] = v.ACL.Deny
	}
	if len(v.ACL.Allow) > 0 {
		c.ACL["allow"] = v.ACL.Allow
	} else {
		c.ACL["deny"] = append(c.ACL["deny"], "0.0.0.0/0", "::/0")
		notes = append(notes, "acl.allow is empty: Vigrid refused every client, so the config denies 0.0.0.0/0 and ::/0; add acl.allow entries")
	}

	users := map[string]string{}
	allowedUsers := []string{}
	if v.RunAs != "" {
		allowedUsers = append(allowedUsers, v.RunAs)
	}
	for _, tn := range sortedKeys(v.Tokens) {
		t := v.Tokens[tn]
		if t.Secret == "" {
			notes = append(notes, fmt.Sprintf("token %q has no secret and is left out", tn))
			continue
		}
		if tn == "admin" {
			notes = append(notes, `token "admin": orderly serve keeps its own admin token under this name and refuses a second one; rename it (and its policy rule) before using this file with serve`)
		}
		if publishedVigridSecret(t.Secret) {
			// Carried over so that its clients keep working, but anyone
			// who read Vigrid's documentation holds it.
			notes = append(notes, fmt.Sprintf("token %q: its secret is an example from Vigrid's documentation (or says change-me), "+
				"known to whoever read it; give its clients a new one (orderly token new) and replace its sha256", tn))
		}
		sum := sha256.Sum256([]byte(t.Secret))
		c.Auth.Tokens = append(c.Auth.Tokens, importedToken{Name: tn, SHA256: hex.EncodeToString(sum[:])})
		r := importedRule{Name: tn, Principals: []string{tn}, Hosts: []string{host}, Allow: []string{}}
		for _, p := range t.AllowCommands {
			if _, err := regexp.Compile(p); err != nil {
				notes = append(notes, fmt.Sprintf("token %q: allow pattern %q is not RE2 syntax (Go) and is left out: %v", tn, p, err))
				continue
			}
			r.Allow = append(r.Allow, p)
		}
		for _, p := range t.DenyCommands {
			if _, err := regexp.Compile(p); err != nil {
				// Dropping a deny rule would widen access: refuse instead.
				return nil, nil, fmt.Errorf("token %q: deny pattern %q is not RE2 syntax (Go): %v; rewrite it and import again", tn, p, err)
			}
			r.Deny = append(r.Deny, p)
		}
		u := cmp.Or(t.User, v.RunAs)
		if u != "" {
			r.RunAs = []string{u}
			if t.User != "" {
				users[tn] = t.User
			}
			if !slices.Contains(allowedUsers, u) {
				allowedUsers = append(allowedUsers, u)
			}
		}
		c.Policy = append(c.Policy, r)
	}
	if len(allowedUsers) > 0 {
		sort.Strings(allowedUsers)
		c.Worker["allowed_users"] = allowedUsers
	}
	if len(c.Auth.Tokens) > 0 {
		notes = append(notes, "every token could POST /api/v1/reload: in orderly that needs the admin role (add roles: [admin] to the token that reloads, or reload with SIGHUP)")
	}
	// Vigrid ran an execute that named no timeout until it ended; orderly
	// ends an order that names none after limits.default_timeout, whose
	// own default (60s) would kill every longer command of a client that
	// never sent one. The longest an order may run keeps them running,
	// still bounded; the note says how to lower it.
	c.Limits = map[string]any{"default_timeout": vigridDefaultTimeout}
	notes = append(notes, "Vigrid ran an execute without a timeout until it ended: limits.default_timeout is "+vigridDefaultTimeout+
		" (limits.max_timeout's default, the longest an order may run) instead of orderly's 60s; lower it to bound a command that hangs "+
		"(a synchronous execute waits at most compat.vigrid.max_wait, 5m by default, and its command ends then)")
	vc := map[string]any{"enabled": true, "prefix": "/api/v1", "host": host, "dry_run": v.DryRun}
	if v.RunAs != "" {
		vc["default_user"] = v.RunAs
	}
	if len(users) > 0 {
		vc["users"] = users
	}
	c.Compat.Vigrid = vc
	if len(c.Log) == 0 {
		c.Log = nil
	}

	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# orderly config converted from the Vigrid Shell API config %s by `orderly import vigrid`.\n", name)
	fmt.Fprintf(&buf, "# Token secrets are stored as SHA-256 only; Vigrid clients keep sending the same bearer tokens.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, nil, fmt.Errorf("write orderly config: %w", err)
	}
	return buf.Bytes(), notes, nil
}

// forbiddenOf reads forbidden_chars: a YAML list of characters or a
// string of them; absent means Vigrid's default set.
func forbiddenOf(n yaml.Node) (string, error) {
	switch n.Kind {
	case 0:
		return vigridDefaultForbidden, nil
	case yaml.ScalarNode:
		return n.Value, nil
	case yaml.SequenceNode:
		var list []string
		if err := n.Decode(&list); err != nil {
			return "", err
		}
		return strings.Join(list, ""), nil
	}
	return "", fmt.Errorf("want a list or a string")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// publishedVigridSecret says whether secret is one of the example secrets
// Vigrid's documentation and installer print, or says it wants changing.
func publishedVigridSecret(secret string) bool {
	switch secret {
	case "your-secret-token-here", "monitor-token-here", "VigridAdmin-Secret-Token-Change-Me":
		return true
	}
	l := strings.ToLower(secret)
	return strings.Contains(l, "change-me") || strings.Contains(l, "changeme") || strings.Contains(l, "change_me")
}
