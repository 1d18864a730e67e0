// Package action compiles the actions section of the config: named,
// parameterized, fixed-format commands (DESIGN §6, docs/actions.md). The
// API uses a Set to list actions, validate a run's values up front and
// authorize it; each worker compiles its own Set from its own config and
// renders the command from it, validating every value again, so that what
// runs is never more than what the worker's config allows.
package action

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
)

// Set is the compiled actions of one config. It is immutable, so one Set
// may serve concurrent requests; a reload compiles a new one.
type Set struct {
	bus  string
	defs []*Def
}

// Def is one compiled action.
type Def struct {
	Name        string
	Title       string
	Description string
	Params      []*Param
	Command     []Template // argv; empty for a systemd verb
	Env         []EnvTemplate
	Verb        string   // a native systemd verb; "" for a command
	Unit        Template // the unit name pattern of a systemd verb
	Roles       []string
	Principals  []string
	Hosts       []string
	RunAs       string
	Timeout     time.Duration
	Confirm     bool
	Limit       config.ActionLimit
}

// EnvTemplate is one environment variable of a command.
type EnvTemplate struct {
	Name  string
	Value Template
}

// Verbs are the native systemd verbs an action may use.
var Verbs = []string{"start", "stop", "restart", "reload", "try-restart"}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// New compiles cfg. Every mistake is an error naming the action and the
// key, so a typo stops the config from loading instead of letting an
// action render something else than intended.
func New(cfg config.Actions) (*Set, error) {
	s := &Set{bus: cfg.Bus}
	seen := map[string]bool{}
	for i, ca := range cfg.Definitions {
		if !nameRE.MatchString(ca.Name) {
			return nil, fmt.Errorf("actions.definitions[%d].name %q: want 1-63 characters of [a-z0-9_-], starting with a letter or digit", i, ca.Name)
		}
		if seen[ca.Name] {
			return nil, fmt.Errorf("action %q: duplicate name", ca.Name)
		}
		seen[ca.Name] = true
		d, err := compile(ca)
		if err != nil {
			return nil, fmt.Errorf("action %q: %w", ca.Name, err)
		}
		s.defs = append(s.defs, d)
	}
	return s, nil
}

func compile(ca config.Action) (*Def, error) {
	d := &Def{Name: ca.Name, Title: ca.Title, Description: ca.Description,
		Roles: slices.Clone(ca.Roles), Principals: slices.Clone(ca.Principals), Hosts: slices.Clone(ca.Hosts),
		RunAs: ca.RunAs, Timeout: ca.Timeout, Confirm: ca.Confirm, Limit: ca.Limit}
	if d.Title == "" {
		d.Title = d.Name
	}
	byName := map[string]*Param{}
	for i, cp := range ca.Params {
		p, err := compileParam(cp)
		if err != nil {
			return nil, fmt.Errorf("params[%d]: %w", i, err)
		}
		if byName[p.Name] != nil {
			return nil, fmt.Errorf("params[%d]: duplicate name %q", i, p.Name)
		}
		byName[p.Name] = p
		d.Params = append(d.Params, p)
	}
	if err := d.compileRun(ca, byName); err != nil {
		return nil, err
	}
	for _, h := range d.Hosts {
		if _, err := path.Match(h, ""); err != nil || h == "" {
			return nil, fmt.Errorf("hosts: bad glob %q", h)
		}
	}
	if len(d.Hosts) == 0 {
		return nil, fmt.Errorf("hosts: name the hosts it may run on (globs; * for all)")
	}
	if d.RunAs != "" && !order.ValidUser(d.RunAs) {
		return nil, fmt.Errorf("run_as %q is not a valid user name", d.RunAs)
	}
	if d.Timeout < 0 {
		return nil, fmt.Errorf("timeout must not be negative")
	}
	if l := d.Limit; l.Runs < 0 || l.Per < 0 || l.ConcurrentPerHost < 0 || (l.Runs > 0) != (l.Per > 0) {
		return nil, fmt.Errorf("limit: runs and per go together and must not be negative; concurrent_per_host must not be negative")
	}
	return d, nil
}

// compileRun compiles the command or the systemd verb, and checks where
// each placeholder may go.
func (d *Def) compileRun(ca config.Action, params map[string]*Param) error {
	hasCmd, hasVerb := len(ca.Command) > 0, ca.Systemd.Verb != "" || ca.Systemd.Unit != ""
	switch {
	case hasCmd == hasVerb:
		return fmt.Errorf("set exactly one of command and systemd")
	case hasVerb:
		if !slices.Contains(Verbs, ca.Systemd.Verb) {
			return fmt.Errorf("systemd.verb %q: want one of %v", ca.Systemd.Verb, Verbs)
		}
		if len(ca.Env) > 0 || ca.RunAs != "" {
			return fmt.Errorf("env and run_as apply to commands, not to a systemd verb")
		}
		t, err := parseTemplate(ca.Systemd.Unit, params)
		if err != nil {
			return fmt.Errorf("systemd.unit: %w", err)
		}
		if err := checkUnitPattern(t); err != nil {
			return fmt.Errorf("systemd.unit: %w", err)
		}
		// A param's unit choices are the units its value renders: the
		// dropdown must never show one unit and the button act on another.
		for _, cp := range ca.Params {
			if params[cp.Name].Units != "" && !slices.Contains(t.Params(), cp.Name) {
				return fmt.Errorf("param %q: units choices for a param systemd.unit does not use (%q): the page would list units the action does not act on", cp.Name, ca.Systemd.Unit)
			}
		}
		if prefix, suffix, n := t.literals(); n == 1 {
			for _, name := range t.Params() {
				if g := params[name].Units; g != "" && g != prefix+"*"+suffix {
					return fmt.Errorf("param %q: units %q must be systemd.unit with * for {%s}: %q", name, g, name, prefix+"*"+suffix)
				}
			}
		}
		d.Verb, d.Unit = ca.Systemd.Verb, t
	default:
		for i, el := range ca.Command {
			t, err := parseTemplate(el, params)
			if err != nil {
				return fmt.Errorf("command[%d]: %w", i, err)
			}
			if i == 0 && len(t.Params()) > 0 {
				return fmt.Errorf("command[0] must be a fixed command, without placeholders")
			}
			if i == 0 {
				name, _ := t.Render(nil)
				if err := checkCommand(name); err != nil {
					return fmt.Errorf("command[0]: %w", err)
				}
			}
			d.Command = append(d.Command, t)
		}
		for i, e := range ca.Env {
			if !order.ValidEnvName(e.Name) {
				return fmt.Errorf("env[%d].name %q is not [A-Za-z_][A-Za-z0-9_]*", i, e.Name)
			}
			t, err := parseTemplate(e.Value, params)
			if err != nil {
				return fmt.Errorf("env[%d].value: %w", i, err)
			}
			d.Env = append(d.Env, EnvTemplate{Name: e.Name, Value: t})
		}
	}
	// A secret in argv would be readable by every user of the host in
	// /proc/<pid>/cmdline, and recorded as the order's rendered command.
	for _, t := range append(slices.Clone(d.Command), d.Unit) {
		for _, name := range t.Params() {
			if params[name].Secret {
				return fmt.Errorf("secret param %q may only be used in env", name)
			}
		}
	}
	return nil
}

// checkCommand refuses a command[0] that no worker resolves, so that the
// mistake stops the config instead of rejecting every run: a worker looks
// a bare name up in worker.command_path and takes a path only when it is
// absolute, without . or .. elements.
func checkCommand(name string) error {
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("%q: want a command name or an absolute path", name)
	}
	if strings.Contains(name, "/") {
		if !path.IsAbs(name) {
			return fmt.Errorf("%q: a path must be absolute (a bare name is looked up in worker.command_path)", name)
		}
		if els := strings.Split(name, "/"); slices.Contains(els, ".") || slices.Contains(els, "..") {
			return fmt.Errorf("%q: a path must not contain . or .. elements", name)
		}
	}
	return nil
}

// Bus is the D-Bus the worker talks to systemd on: "system" or "user".
func (s *Set) Bus() string { return s.bus }

// Lookup returns the action named name, or nil.
func (s *Set) Lookup(name string) *Def {
	if s == nil {
		return nil
	}
	for _, d := range s.defs {
		if d.Name == name {
			return d
		}
	}
	return nil
}

// All returns every action in config order.
func (s *Set) All() []*Def {
	if s == nil {
		return nil
	}
	return slices.Clone(s.defs)
}

// For returns the actions p may run, in config order.
func (s *Set) For(p auth.Principal) []*Def {
	var out []*Def
	for _, d := range s.All() {
		if d.Allows(p) {
			out = append(out, d)
		}
	}
	return out
}

// Allows reports whether p may run d: named in principals ("*" for any
// authenticated principal) or holding one of its roles.
func (d *Def) Allows(p auth.Principal) bool {
	if p.Name == "" {
		return false
	}
	if slices.Contains(d.Principals, "*") || slices.Contains(d.Principals, p.Name) {
		return true
	}
	return slices.ContainsFunc(d.Roles, p.HasRole)
}

// AllowsHost reports whether d may run on host.
func (d *Def) AllowsHost(host string) bool {
	for _, g := range d.Hosts {
		if ok, _ := path.Match(g, host); ok {
			return true
		}
	}
	return false
}

// Param returns the param named name, or nil (also for a nil d: an
// action this process does not know).
func (d *Def) Param(name string) *Param {
	if d == nil {
		return nil
	}
	for _, p := range d.Params {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Command is what an action order shows as its command, and what its
// history is searched by: "action:<name>". No executable is named so.
func Command(name string) string { return "action:" + name }
