package policy

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/order"
)

// The verdicts a decision trace entry can carry, as in "ops:allow:^ls( |$)".
const (
	Allow   = "allow"
	Deny    = "deny"
	refused = "refused" // an allow regex matched but a constraint of the rule failed
)

// Request is what the API asks the policy about one order on one host.
type Request struct {
	Principal    auth.Principal
	Host         string
	Command      string
	ResolvedPath string // absolute path the command resolves to; "" when the API does not know
	Args         []string
	RunAs        string        // "" means the worker's default user
	Timeout      time.Duration // already defaulted by order.Validate; 0 is refused under a max
	// TimeoutDefaulted says Timeout is limits.default_timeout, not the
	// client's: a rule's lower max_timeout then clamps it (Decision.Timeout).
	TimeoutDefaulted bool
	DryRun           bool
}

// Decide authorizes r. Deny wins: if a deny regex of any rule that applies
// to the principal matches any form of the command line, on any host, the
// order is denied. Otherwise it is allowed only when an applicable rule
// matches the host, has an allow regex matching the command, and accepts
// the run_as user, the timeout and the dry-run flag; by default it is
// denied. The returned Decision lists the rule entries that decided. A
// denial also returns an *order.Error with CodeForbidden whose message names
// the reason and whose Details["policy"] is the Decision.
func (e *Engine) Decide(r Request) (order.Decision, error) {
	applicable := make([]*rule, 0, len(e.rules))
	for i := range e.rules {
		if e.rules[i].appliesTo(r.Principal.Name, r.Principal.HasRole) {
			applicable = append(applicable, &e.rules[i])
		}
	}
	if len(applicable) == 0 {
		return deny(nil, fmt.Sprintf("no policy rule applies to principal %q", r.Principal.Name)+e.adminHint(r))
	}

	// The allow lines are the deny lines' first ones (denyLines): built
	// once, not again below.
	denyForms, nAllow := denyLines(r)
	var matched []string
	var denied []string
	for _, ru := range applicable {
		for _, p := range ru.deny {
			if matchAny(p, denyForms) {
				matched = append(matched, ru.name+":"+Deny+":"+p.src)
				if !slices.Contains(denied, ru.name) {
					denied = append(denied, ru.name)
				}
			}
		}
	}
	if len(denied) > 0 {
		return deny(matched, "command denied by rule "+quoteList(denied))
	}

	allowForms := denyForms[:nAllow]
	var allowed, refusals, reasons []string
	var timeout time.Duration
	for _, ru := range applicable {
		i := slices.IndexFunc(ru.allow, func(p pattern) bool { return matchAny(p, allowForms) })
		if i < 0 {
			continue
		}
		fails, why := ru.constraints(r)
		if len(fails) == 0 {
			allowed = append(allowed, ru.name+":"+Allow+":"+ru.allow[i].src)
			d, _ := ru.timeoutFor(r)
			timeout = max(timeout, d)
			continue
		}
		for _, f := range fails {
			refusals = append(refusals, ru.name+":"+refused+":"+f)
		}
		reasons = append(reasons, why...)
	}
	if len(allowed) > 0 {
		// Only the allowing rules decided; refusals by others did not.
		d := order.Decision{Decision: Allow, Matched: allowed}
		if r.ResolvedPath == "" {
			// The worker checks them again with the resolved path.
			for _, ru := range applicable {
				d.Deny = append(d.Deny, ru.denyRules...)
			}
		}
		if timeout != r.Timeout {
			d.Timeout = timeout
		}
		return d, nil
	}
	matched = refusals
	if len(reasons) == 0 {
		return deny(matched, fmt.Sprintf("no policy rule allows command %q for principal %q", r.Command, r.Principal.Name)+e.adminHint(r))
	}
	return deny(matched, strings.Join(reasons, "; "))
}

// adminHint tells an admin refused for want of a rule why: the built-in
// admin rule (serve's admin.token may run anything) gives way to the
// config's first policy rule, which surprises whoever added a rule for
// someone else (a compat surface's principal, a role) and then finds
// serve's admin token refused.
func (e *Engine) adminHint(r Request) string {
	if e.builtin || !r.Principal.HasRole("admin") {
		return ""
	}
	return " (the built-in rule that lets the admin role run anything applies only while the config has no policy rule: add a rule for admin, docs/config.md#policy)"
}

// constraints checks everything but the allow regex and returns trace
// details and client-facing reasons for each failure.
func (ru *rule) constraints(r Request) (fails, reasons []string) {
	if !ru.hostAllowed(r.Host) {
		fails = append(fails, "host="+r.Host)
		reasons = append(reasons, fmt.Sprintf("host %q not allowed by rule %q", r.Host, ru.name))
	}
	if !ru.runAsAllowed(r.RunAs) {
		user := r.RunAs
		if user == "" {
			user = "default"
		}
		fails = append(fails, "run_as="+user)
		reasons = append(reasons, fmt.Sprintf("run_as %q not allowed by rule %q", user, ru.name))
	}
	if _, ok := ru.timeoutFor(r); !ok {
		fails = append(fails, fmt.Sprintf("timeout=%s>max=%s", r.Timeout, ru.maxTimeout))
		reasons = append(reasons, fmt.Sprintf("timeout %s above max %s of rule %q", r.Timeout, ru.maxTimeout, ru.name))
	}
	if ru.dryRunOnly && !r.DryRun {
		fails = append(fails, "dry_run_only")
		reasons = append(reasons, fmt.Sprintf("rule %q allows dry runs only", ru.name))
	}
	return fails, reasons
}

// deny builds the denial: the Decision and the 403 carrying it.
func deny(matched []string, reason string) (order.Decision, error) {
	if matched == nil {
		matched = []string{} // a JSON array, never null, in the order record
	}
	d := order.Decision{Decision: Deny, Matched: matched}
	return d, &order.Error{
		Code:    order.CodeForbidden,
		Message: "policy: " + reason,
		Details: map[string]any{"policy": d},
	}
}

// allowLines are the command lines allow regexes are tried on: as the
// client wrote it and, when known, with the resolved absolute path. An
// allow rule must name the command; "/tmp/x/uptime" is not "uptime".
func allowLines(r Request) []string {
	lines := []string{line(r.Command, r.Args)}
	if r.ResolvedPath != "" {
		lines = appendNew(lines, line(r.ResolvedPath, r.Args))
	}
	return lines
}

// denyLines are every spelling of the command deny regexes are tried on:
// the allow lines plus, for anything with a slash, the cleaned path and the
// bare basename. So "/sbin/shutdown -h now", "../sbin//shutdown" and a name
// that resolves to /usr/sbin/shutdown all meet a "^shutdown" deny rule (the
// Vigrid Shell API bypass). The first nAllow of them are allowLines'.
func denyLines(r Request) (lines []string, nAllow int) {
	lines = allowLines(r)
	nAllow = len(lines)
	for _, c := range []string{r.Command, r.ResolvedPath} {
		if !strings.Contains(c, "/") {
			continue
		}
		clean := path.Clean(c)
		lines = appendNew(lines, line(clean, r.Args))
		lines = appendNew(lines, line(path.Base(clean), r.Args))
	}
	return lines, nAllow
}

// line joins a command and its arguments the way rules are written:
// "<command> <arg1> <arg2>…".
func line(cmd string, args []string) string {
	if len(args) == 0 {
		return cmd
	}
	n := len(cmd) + len(args)
	for _, a := range args {
		n += len(a)
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString(cmd)
	for _, a := range args {
		b.WriteByte(' ')
		b.WriteString(a)
	}
	return b.String()
}

func appendNew(s []string, v string) []string {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

func matchAny(p pattern, lines []string) bool {
	return slices.ContainsFunc(lines, p.re.MatchString)
}

func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}

// DenyResolved applies the deny rules an allowed decision carries (d.Deny)
// to the command line with path, the absolute path the command resolved to
// on the host: the part of Decide that needs the host's file system, done
// by the worker before it starts the process. A match is a CodeForbidden
// error naming the rule, as Decide's denial is. A regex that does not
// compile refuses the order: the worker fails closed.
func DenyResolved(d order.Decision, command, path string, args []string) error {
	if len(d.Deny) == 0 {
		return nil
	}
	forms, _ := denyLines(Request{Command: command, ResolvedPath: path, Args: args})
	var matched, denied []string
	for _, dr := range d.Deny {
		re, err := denyRegex(dr.Regex)
		if err != nil {
			return &order.Error{Code: order.CodeForbidden, Message: fmt.Sprintf("policy: deny regex %q of rule %q does not compile: %v", dr.Regex, dr.Rule, err)}
		}
		if slices.ContainsFunc(forms, re.MatchString) {
			matched = append(matched, dr.Rule+":"+Deny+":"+dr.Regex)
			if !slices.Contains(denied, dr.Rule) {
				denied = append(denied, dr.Rule)
			}
		}
	}
	if len(denied) == 0 {
		return nil
	}
	_, err := deny(matched, fmt.Sprintf("command denied by rule %s (it resolves to %s)", quoteList(denied), path))
	return err
}

// denyRegexes caches the deny regexes DenyResolved compiled: an order
// carries its rules' sources, and the same few come with every order.
var denyRegexes sync.Map // source → *regexp.Regexp

// denyRegex compiles a deny regex as compile does, once.
func denyRegex(src string) (*regexp.Regexp, error) {
	if re, ok := denyRegexes.Load(src); ok {
		return re.(*regexp.Regexp), nil
	}
	ps, err := compilePatterns([]string{src}, denyFlags)
	if err != nil {
		return nil, err
	}
	re := ps[0].re
	if n := denyRegexCount.Add(1); n > maxCachedDenyRegexes {
		// Config reloads could grow it without end: start over.
		denyRegexes.Clear()
		denyRegexCount.Store(0)
	}
	denyRegexes.Store(src, re)
	return re, nil
}

var denyRegexCount atomic.Int64

const maxCachedDenyRegexes = 4096
