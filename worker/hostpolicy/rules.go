package hostpolicy

import (
	"path"
	"slices"
	"strings"

	"github.com/orderly-run/orderly/internal/order"
)

// checkRules applies worker.deny and worker.allow (DESIGN §4.3, §4.4).
//
// Rules match command lines "<program> <arg1> <arg2>…" (arguments joined by
// single spaces). Allow rules see the command as the client named it and
// as resolved (canonical command_path entry). Deny rules also see every
// other name the same program goes by: the base name of an absolute
// command, so /sbin/shutdown cannot dodge ^shutdown, and the real file
// behind a symlink with its base name, so a rule against
// /usr/bin/systemctl also catches the shutdown link to it. Deny is widened
// and allow is not, because a wider allow would let a multi-call binary's
// link borrow its target's permission (allowing "^systemctl status" must
// not allow "shutdown status").
func (p *Policy) checkRules(name string, c command, args []string) error {
	if len(p.deny) == 0 && len(p.allow) == 0 {
		return nil
	}
	argLine := strings.Join(args, " ")
	line := func(program string) string {
		if len(args) == 0 {
			return program
		}
		return program + " " + argLine
	}
	allowed := uniq(line(name), line(c.resolvedPath))
	denied := uniq(append(slices.Clone(allowed),
		line(path.Base(name)), line(c.realPath), line(path.Base(c.realPath)))...)
	for _, re := range p.deny {
		for _, s := range denied {
			if re.MatchString(s) {
				e := order.FieldError(order.CodeForbidden, "command", "denied by this host's rule %q", re.String())
				e.Details["rule"] = re.String()
				return e
			}
		}
	}
	if len(p.allow) == 0 {
		return nil
	}
	for _, re := range p.allow {
		for _, s := range allowed {
			if re.MatchString(s) {
				return nil
			}
		}
	}
	return order.FieldError(order.CodeForbidden, "command", "no allow rule of this host matches %q", line(name))
}

func uniq(s ...string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

// forbiddenRune returns the first character of s that worker.forbidden_chars
// lists.
func (p *Policy) forbiddenRune(s string) (rune, bool) {
	return order.ForbiddenRune(s, p.forbidden)
}
