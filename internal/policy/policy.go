// Package policy is the API's authorization layer (DESIGN §4.3): rules keyed
// by principal or role decide which commands may run on which hosts, as
// whom, for how long, and whether only as a dry run. Every decision carries
// the rules behind it so a denial can be explained and audited.
package policy

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"time"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
)

// Engine holds compiled policy rules. It is immutable once built, so one
// Engine can serve concurrent requests and a config reload swaps in a new one.
type Engine struct {
	rules []rule
	// builtin says the rules are the built-in admin rule (no policy
	// configured); without it, an admin's refusal says why admin is refused.
	builtin bool
}

// BuiltinAdmin names the rule a config without policy rules gets: the
// admin role may run anything as anyone. It applies only while no rule is
// configured.
const BuiltinAdmin = "builtin-admin"

// rule is a config.Rule with its patterns compiled.
type rule struct {
	name       string
	principals []string
	everyone   bool // "*" in principals: any authenticated principal
	roles      []string
	hosts      []string
	allow      []pattern
	deny       []pattern
	// denyRules are deny's sources as an allowed decision carries them to
	// the worker (order.Decision.Deny), built once.
	denyRules  []order.DenyRule
	runAs      []string
	maxTimeout time.Duration
	dryRunOnly bool
}

// pattern is a compiled regex with the source text the trace shows.
type pattern struct {
	src string
	re  *regexp.Regexp
}

// New compiles rules. A bad regex or glob, a missing or duplicate name, or
// a negative max_timeout is an error naming the rule, so a typo stops the
// config from loading instead of silently allowing or denying.
func New(rules []config.Rule) (*Engine, error) {
	e := &Engine{rules: make([]rule, 0, len(rules))}
	seen := map[string]bool{}
	for i, cr := range rules {
		if cr.Name == "" {
			return nil, fmt.Errorf("policy rule #%d: name is required", i+1)
		}
		if seen[cr.Name] {
			return nil, fmt.Errorf("policy rule %q: duplicate name", cr.Name)
		}
		seen[cr.Name] = true
		e.builtin = e.builtin || cr.Name == BuiltinAdmin
		r, err := compile(cr)
		if err != nil {
			return nil, fmt.Errorf("policy rule %q: %w", cr.Name, err)
		}
		e.rules = append(e.rules, r)
	}
	return e, nil
}

func compile(cr config.Rule) (rule, error) {
	r := rule{
		name:       cr.Name,
		principals: slices.Clone(cr.Principals),
		everyone:   slices.Contains(cr.Principals, "*"),
		roles:      slices.Clone(cr.Roles),
		hosts:      slices.Clone(cr.Hosts),
		runAs:      slices.Clone(cr.RunAs),
		maxTimeout: cr.MaxTimeout,
		dryRunOnly: cr.DryRunOnly,
	}
	if cr.MaxTimeout < 0 {
		return rule{}, errors.New("max_timeout must not be negative")
	}
	for _, h := range cr.Hosts {
		// path.Match validates the whole pattern even when it does not
		// match, so any subject will surface a syntax error here.
		if _, err := path.Match(h, ""); err != nil || h == "" {
			return rule{}, fmt.Errorf("hosts: bad glob %q", h)
		}
	}
	var err error
	if r.allow, err = compilePatterns(cr.Allow, ""); err != nil {
		return rule{}, fmt.Errorf("allow: %w", err)
	}
	if r.deny, err = compilePatterns(cr.Deny, denyFlags); err != nil {
		return rule{}, fmt.Errorf("deny: %w", err)
	}
	for _, p := range r.deny {
		r.denyRules = append(r.denyRules, order.DenyRule{Rule: r.name, Regex: p.src})
	}
	return r, nil
}

// denyFlags: deny regexes run in dot-all mode, so an argument holding a
// newline cannot let "rm .*-rf" miss "rm x\n -rf". Allow regexes keep Go's
// default, where such input fails to match and is denied.
const denyFlags = "(?s)"

func compilePatterns(srcs []string, flags string) ([]pattern, error) {
	ps := make([]pattern, 0, len(srcs))
	for _, s := range srcs {
		if s == "" {
			return nil, errors.New("empty regex (it would match every command)")
		}
		re, err := regexp.Compile(flags + s)
		if err != nil {
			return nil, fmt.Errorf("bad regex %q: %w", s, err)
		}
		ps = append(ps, pattern{src: s, re: re})
	}
	return ps, nil
}

// appliesTo reports whether the rule governs a principal: named in
// principals, "*" for anyone authenticated, or holding one of its roles. A
// rule with neither principals nor roles applies to nobody.
func (r *rule) appliesTo(name string, hasRole func(string) bool) bool {
	if name == "" {
		return false
	}
	if r.everyone || slices.Contains(r.principals, name) {
		return true
	}
	return slices.ContainsFunc(r.roles, hasRole)
}

// hostAllowed reports whether host matches one of the rule's globs; a rule
// without hosts allows no host.
func (r *rule) hostAllowed(host string) bool {
	for _, g := range r.hosts {
		if ok, _ := path.Match(g, host); ok {
			return true
		}
	}
	return false
}

// runAsAllowed reports whether the rule lets the order run as user. The
// empty user means the worker's default user, allowed when the rule lists
// no users or lists "" or "default"; "*" in the list allows any user,
// the default one included.
func (r *rule) runAsAllowed(user string) bool {
	if slices.Contains(r.runAs, "*") {
		return true
	}
	if user == "" {
		return len(r.runAs) == 0 || slices.Contains(r.runAs, "") || slices.Contains(r.runAs, "default")
	}
	return slices.Contains(r.runAs, user)
}

// timeoutFor is the timeout the rule lets the order run with; ok is false
// when the rule refuses it. A default timeout (the client named none) above
// the rule's max_timeout is clamped to it: refusing would make every such
// order need an explicit timeout the client may not know it needs.
func (r *rule) timeoutFor(req Request) (d time.Duration, ok bool) {
	switch {
	case r.maxTimeout == 0 || (req.Timeout > 0 && req.Timeout <= r.maxTimeout):
		return req.Timeout, true
	case req.TimeoutDefaulted && req.Timeout > r.maxTimeout:
		return r.maxTimeout, true
	}
	return 0, false
}
