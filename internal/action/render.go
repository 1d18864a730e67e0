package action

import (
	"github.com/orderly-run/orderly/internal/order"
)

// Rendered is an action made concrete for one run: a command (Argv, Env)
// or a systemd verb on a unit. Argv never holds a secret value (New
// refuses a secret placeholder outside env).
type Rendered struct {
	Argv []string
	Env  map[string]string
	Verb string
	Unit string
}

// Render validates values against d's own rules (Resolve) and renders
// d's template, element by element: each argv element, env value and the
// unit name is one string whatever the values hold. A refusal is an
// *order.Error naming the param.
func (d *Def) Render(values map[string]string) (*Rendered, error) {
	vals, err := d.Resolve(values)
	if err != nil {
		return nil, err
	}
	return d.render(vals)
}

// render renders values Resolve has already checked and completed.
func (d *Def) render(vals map[string]string) (*Rendered, error) {
	r := &Rendered{Verb: d.Verb}
	if d.Verb != "" {
		u, err := d.Unit.Render(vals)
		if err == nil {
			err = checkUnitName(u)
		}
		if err != nil {
			return nil, order.FieldError(order.CodeUnprocessable, "params", "action %s: the unit name: %s", d.Name, err.Error())
		}
		r.Unit = u
		return r, nil
	}
	for _, t := range d.Command {
		el, err := t.Render(vals)
		if err != nil {
			return nil, order.FieldError(order.CodeUnprocessable, "params", "action %s: %s", d.Name, err.Error())
		}
		r.Argv = append(r.Argv, el)
	}
	if len(d.Env) > 0 {
		r.Env = make(map[string]string, len(d.Env))
		for _, e := range d.Env {
			v, err := e.Value.Render(vals)
			if err != nil {
				return nil, order.FieldError(order.CodeUnprocessable, "params", "action %s: %s", d.Name, err.Error())
			}
			r.Env[e.Name] = v
		}
	}
	return r, nil
}

// CheckChoice is the check a run makes of v as the value of p, a param
// of d offered as a unit choice: p's rules (Param.Check), then, when p
// alone fills the unit name of a systemd verb, that name (render, as
// Authorize does). A unit name that other params fill too depends on
// their values and is checked when the run is.
func (d *Def) CheckChoice(p *Param, v string) error {
	if err := p.Check(v); err != nil {
		return err
	}
	if d.Verb == "" {
		return nil
	}
	for _, name := range d.Unit.Params() {
		if name != p.Name {
			return nil
		}
	}
	_, err := d.render(map[string]string{p.Name: v})
	return err
}
