package action

import (
	"slices"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/order"
)

// Authorize is the API's decision on an action order (intake calls it in
// place of the command policy): the action exists, p may run it, on
// o.Host, with values that pass its rules. On success it completes the
// order from the definition: values split into params and secrets (with
// defaults filled in), the command shown as "action:<name>", run_as, the
// timeout (when the run named none) and the run limit. The Decision
// records what allowed it.
func (s *Set) Authorize(p auth.Principal, o *order.Order) (order.Decision, error) {
	denied := order.Decision{Decision: "deny", Matched: []string{}}
	a := o.Action
	d := s.Lookup(a.Name)
	if d == nil {
		return denied, order.Errorf(order.CodeNotFound, "no action named %q", printable(a.Name))
	}
	if !d.Allows(p) {
		return denied, &order.Error{Code: order.CodeForbidden, Message: "action " + d.Name + ": principal " + p.Name + " may not run it",
			Details: map[string]any{"reason": "action_principal", "action": d.Name}}
	}
	if !d.AllowsHost(o.Host) {
		return denied, &order.Error{Code: order.CodeForbidden, Message: "action " + d.Name + ": host " + o.Host + " is not one of its hosts",
			Details: map[string]any{"reason": "action_host", "action": d.Name, "field": "host"}}
	}
	in := make(map[string]string, len(a.Params)+len(a.Secrets))
	for k, v := range a.Params {
		in[k] = v
	}
	for k, v := range a.Secrets {
		in[k] = v
	}
	vals, err := d.Resolve(in)
	if err != nil {
		return denied, err
	}
	// What the worker will render, refused here too: a value its pattern
	// allows may still make no unit name (x/y, *, an empty instance).
	if _, err := d.render(vals); err != nil {
		return denied, err
	}
	a.Params, a.Secrets = d.Split(vals)
	a.SecretNames = sortedKeys(a.Secrets)
	a.Limit = order.ActionLimit{Runs: d.Limit.Runs, Per: d.Limit.Per, ConcurrentPerHost: d.Limit.ConcurrentPerHost}
	o.Command = Command(d.Name)
	o.Args = nil
	o.RunAs = d.RunAs
	if d.Timeout > 0 {
		o.Timeout = d.Timeout
	}
	return order.Decision{Decision: "allow", Matched: d.trace(p)}, nil
}

// trace names what let p run d, as "action:<name>:role=ops".
func (d *Def) trace(p auth.Principal) []string {
	var out []string
	prefix := "action:" + d.Name + ":"
	if slices.Contains(d.Principals, p.Name) {
		out = append(out, prefix+"principal="+p.Name)
	} else if slices.Contains(d.Principals, "*") {
		out = append(out, prefix+"principal=*")
	}
	for _, r := range d.Roles {
		if p.HasRole(r) {
			out = append(out, prefix+"role="+r)
		}
	}
	return out
}
