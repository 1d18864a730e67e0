package config

import (
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
)

// Summary says what a reload changes in the four parts of the security
// setup, so that an operator sees what a new file does to who may log in,
// what they may run, from where, and how the worker contains it. It lists
// names and keys, never values (a JWT secret is a value).
type Summary struct {
	// Principals are the configured credentials: "token:<name>" for each
	// auth.tokens entry and "jwt" when JWT is on. Tokens stored in
	// PostgreSQL (serve's admin token) are not config and never change.
	Principals Section `json:"principals"`
	// Rules are the policy rules by name.
	Rules Section `json:"rules"`
	// ACL entries are "allow <cidr>", "deny <cidr>" and
	// "trusted_proxy <cidr>".
	ACL Section `json:"acl"`
	// Worker entries are the worker.* keys set to something other than
	// their default.
	Worker Section `json:"worker"`
}

// Section is the change of one part: how many entries it had and has, and
// which were added, removed or changed.
type Section struct {
	Before  int      `json:"before"`
	After   int      `json:"after"`
	Added   []string `json:"added"`
	Removed []string `json:"removed"`
	Changed []string `json:"changed"`
}

// LogValue is a section in a log line: a group of its fields, not Go's
// struct syntax (`rules.added=[ops]`, not `rules={4 4 [ops] [] []}`).
func (s Section) LogValue() slog.Value {
	return slog.GroupValue(slog.Int("before", s.Before), slog.Int("after", s.After),
		slog.Any("added", s.Added), slog.Any("removed", s.Removed), slog.Any("changed", s.Changed))
}

// Summarize compares the security parts of old and new.
func Summarize(old, new Config) Summary {
	return Summary{
		Principals: section(principals(old), principals(new)),
		Rules:      section(rules(old), rules(new)),
		ACL:        section(aclEntries(old), aclEntries(new)),
		Worker:     section(workerKeys(old), workerKeys(new)),
	}
}

// Part names one part of the security setup, which a reload must not
// remove without confirmation.
type Part string

// The parts of the security setup.
const (
	PartPrincipals Part = "principals" // auth.tokens and auth.jwt
	PartRules      Part = "rules"      // policy
	PartACL        Part = "acl"        // acl.allow and acl.deny
	PartWorker     Part = "worker"     // worker.exec_root, default_user, command_path
)

// AllParts are every part, guarded when nothing says which parts a
// process uses.
func AllParts() []Part { return []Part{PartPrincipals, PartRules, PartACL, PartWorker} }

// Removals lists, as sentences, what a reload from old to new would take
// away entirely in the given parts (every part when none are given):
// every principal, every policy rule, the ACL, or part of the worker's
// containment. An empty or truncated file does exactly that while being
// perfectly valid, so such a reload needs explicit confirmation
// (ReloadOptions.Confirm).
func Removals(old, new Config, parts ...Part) []string {
	if len(parts) == 0 {
		parts = AllParts()
	}
	var out []string
	if slices.Contains(parts, PartPrincipals) && len(principals(old)) > 0 && len(principals(new)) == 0 {
		out = append(out, "removes every principal (auth.tokens and auth.jwt): only tokens stored in PostgreSQL would authenticate")
	}
	if slices.Contains(parts, PartRules) && len(old.Policy) > 0 && len(new.Policy) == 0 {
		out = append(out, "removes every policy rule: the built-in rule would let the admin role run anything as anyone")
	}
	if slices.Contains(parts, PartACL) {
		switch {
		case len(old.ACL.Allow) > 0 && len(new.ACL.Allow) == 0 && len(new.ACL.Deny) == 0:
			out = append(out, "removes the ACL (acl.allow and acl.deny): requests from every address would be accepted")
		case len(old.ACL.Allow) > 0 && len(new.ACL.Allow) == 0:
			out = append(out, "removes acl.allow: requests from every address not in acl.deny would be accepted")
		case len(old.ACL.Deny) > 0 && len(new.ACL.Deny) == 0 && len(new.ACL.Allow) == 0:
			out = append(out, "removes the ACL (acl.deny): requests from every address would be accepted")
		}
	}
	if !slices.Contains(parts, PartWorker) {
		return out
	}
	ow, nw, def := old.Worker, new.Worker, Default().Worker
	if ow.ExecRoot != "" && nw.ExecRoot == "" {
		out = append(out, fmt.Sprintf("removes worker.exec_root (%s): commands would no longer be contained in it", ow.ExecRoot))
	}
	if ow.DefaultUser != "" && nw.DefaultUser == "" {
		out = append(out, fmt.Sprintf("removes worker.default_user (%s): orders naming no user would run as the worker's own user", ow.DefaultUser))
	}
	if !slices.Equal(ow.CommandPath, def.CommandPath) && slices.Equal(nw.CommandPath, def.CommandPath) {
		out = append(out, fmt.Sprintf("resets worker.command_path to the default %v", def.CommandPath))
	}
	return out
}

// section diffs two sets of named entries.
func section(old, new map[string]any) Section {
	s := Section{Before: len(old), After: len(new), Added: []string{}, Removed: []string{}, Changed: []string{}}
	for _, k := range slices.Sorted(maps.Keys(new)) {
		ov, ok := old[k]
		switch {
		case !ok:
			s.Added = append(s.Added, k)
		case !reflect.DeepEqual(ov, new[k]):
			s.Changed = append(s.Changed, k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(old)) {
		if _, ok := new[k]; !ok {
			s.Removed = append(s.Removed, k)
		}
	}
	return s
}

func principals(c Config) map[string]any {
	m := map[string]any{}
	for _, t := range c.Auth.Tokens {
		m["token:"+t.Name] = t
	}
	if c.Auth.JWT.Enabled() {
		m["jwt"] = c.Auth.JWT
	}
	return m
}

func rules(c Config) map[string]any {
	m := map[string]any{}
	for _, r := range c.Policy {
		m[r.Name] = r
	}
	return m
}

func aclEntries(c Config) map[string]any {
	m := map[string]any{}
	for _, p := range c.ACL.Allow {
		m["allow "+p] = true
	}
	for _, p := range c.ACL.Deny {
		m["deny "+p] = true
	}
	for _, p := range c.ACL.TrustedProxies {
		m["trusted_proxy "+p] = true
	}
	return m
}

// workerKeys maps each worker key that differs from its default to its
// value; an empty list equals a missing one, as in Changed.
func workerKeys(c Config) map[string]any {
	m := map[string]any{}
	v, d := reflect.ValueOf(c.Worker), reflect.ValueOf(Default().Worker)
	t := v.Type()
	for i := range t.NumField() {
		fv, dv := v.Field(i), d.Field(i)
		if t.Field(i).Type.Kind() == reflect.Slice && fv.Len() == 0 && dv.Len() == 0 {
			continue
		}
		if !reflect.DeepEqual(fv.Interface(), dv.Interface()) {
			m["worker."+t.Field(i).Tag.Get("koanf")] = fv.Interface()
		}
	}
	return m
}
