package hostpolicy

import (
	"slices"

	"github.com/orderly-run/orderly/internal/order"
)

// environment builds the child's complete environment: PATH (the
// command_path), HOME, LANG=C.UTF-8, USER and LOGNAME, then the order's
// overrides, sorted by name. Nothing comes from the worker's own
// environment. An override must pass env_deny and, when set, env_allow:
// a deny list names the hooks known today, an allow list also stops the
// ones nobody listed.
func (p *Policy) environment(overrides map[string]string, kind order.Kind, userName, home string) ([]string, error) {
	names := make([]string, 0, len(overrides))
	for name := range overrides {
		names = append(names, name)
	}
	slices.Sort(names) // the first problem reported is the same every time
	for _, name := range names {
		if !order.ValidEnvName(name) {
			return nil, order.FieldError(order.CodeInvalid, "env",
				"environment variable name %q is not [A-Za-z_][A-Za-z0-9_]*", order.Printable(name))
		}
		if rule, denied := p.envDenied(name); denied {
			e := order.FieldError(order.CodeForbidden, "env",
				"environment variable %s may not be set on this host (env_deny %q)", order.Printable(name), rule)
			e.Details["name"] = name
			return nil, e
		}
		if !order.EnvAllowed(name, p.envAllow, kind) {
			e := order.FieldError(order.CodeForbidden, "env",
				"environment variable %s may not be set on this host (not in env_allow)", order.Printable(name))
			e.Details["name"] = name
			return nil, e
		}
		if order.HasControl(overrides[name], true) {
			return nil, order.FieldError(order.CodeInvalid, "env", "the value of %s contains NUL or control characters", name)
		}
	}

	// The fixed variables in name order, merged with the sorted
	// overrides (an override of one replaces it): the environment a map
	// of both gave once sorted, without the map and its sorted keys (11
	// allocations per order, 4 now: TestWorkerOrderAllocations).
	fixed := [...]struct{ name, entry string }{
		{"HOME", "HOME=" + home}, {"LANG", "LANG=C.UTF-8"}, {"LOGNAME", "LOGNAME=" + userName},
		{"PATH", p.pathVar}, {"USER", "USER=" + userName},
	}
	env := make([]string, 0, len(fixed)+len(names))
	i := 0
	for _, name := range names {
		for ; i < len(fixed) && fixed[i].name < name; i++ {
			env = append(env, fixed[i].entry)
		}
		if i < len(fixed) && fixed[i].name == name {
			i++
		}
		env = append(env, name+"="+overrides[name])
	}
	for ; i < len(fixed); i++ {
		env = append(env, fixed[i].entry)
	}
	return env, nil
}

// envDenied reports the env_deny entry that refuses name.
func (p *Policy) envDenied(name string) (string, bool) {
	return order.EnvDenied(name, p.envDeny)
}
