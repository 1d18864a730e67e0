package api

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/orderly-run/orderly/internal/action"
	"github.com/orderly-run/orderly/internal/order"
)

// ActionDeps wire /v1/actions (docs/actions.md). Set is called per
// request, so a reload applies at once.
type ActionDeps struct {
	Set func() *action.Set
	// Choices lists a host's systemd units matching a glob, with their
	// state; nil when no lister is wired (the choices route answers 503).
	Choices func(ctx context.Context, host, glob string) ([]UnitChoice, error)
}

// UnitChoice is one systemd unit offered as a param's value.
type UnitChoice struct {
	Unit        string `json:"unit"`
	LoadState   string `json:"load_state"`
	ActiveState string `json:"active_state"`
	SubState    string `json:"sub_state"`
}

// ActionView is an action as GET /v1/actions shows it.
type ActionView struct {
	Name           string       `json:"name"`
	Title          string       `json:"title"`
	Description    string       `json:"description"`
	Kind           string       `json:"kind"` // "command" or "systemd"
	Command        []string     `json:"command,omitempty"`
	Verb           string       `json:"verb,omitempty"`
	Unit           string       `json:"unit,omitempty"`
	Hosts          []string     `json:"hosts"`
	RunAs          string       `json:"run_as"`
	TimeoutSeconds float64      `json:"timeout_seconds"`
	Confirm        bool         `json:"confirm"`
	Limit          *ActionLimit `json:"limit"`
	Params         []ParamView  `json:"params"`
}

// ActionLimit is an action's run limit.
type ActionLimit struct {
	Runs              int     `json:"runs"`
	PerSeconds        float64 `json:"per_seconds"`
	ConcurrentPerHost int     `json:"concurrent_per_host"`
}

// ParamView is one param of an action.
type ParamView struct {
	Name        string   `json:"name"`
	Title       string   `json:"title"`
	Description string   `json:"description"`
	Type        string   `json:"type"`
	Pattern     string   `json:"pattern,omitempty"`
	Min         *int64   `json:"min"`
	Max         *int64   `json:"max"`
	Values      []string `json:"values,omitempty"`
	Default     *string  `json:"default"`
	Required    bool     `json:"required"`
	Secret      bool     `json:"secret"`
	// Units is the glob whose matching units are the param's choices
	// (GET /v1/actions/{name}/choices); empty when it has none.
	Units string `json:"units,omitempty"`
}

func viewOf(d *action.Def) ActionView {
	v := ActionView{Name: d.Name, Title: d.Title, Description: d.Description, Kind: "command",
		Hosts: slices.Clone(d.Hosts), RunAs: d.RunAs, TimeoutSeconds: d.Timeout.Seconds(), Confirm: d.Confirm,
		Params: []ParamView{}}
	if d.Verb != "" {
		v.Kind, v.Verb, v.Unit = "systemd", d.Verb, d.Unit.String()
	} else {
		for _, t := range d.Command {
			v.Command = append(v.Command, t.String())
		}
	}
	if l := d.Limit; l.Runs > 0 || l.ConcurrentPerHost > 0 {
		v.Limit = &ActionLimit{Runs: l.Runs, PerSeconds: l.Per.Seconds(), ConcurrentPerHost: l.ConcurrentPerHost}
	}
	for _, p := range d.Params {
		v.Params = append(v.Params, ParamView{Name: p.Name, Title: p.Title, Description: p.Description, Type: p.Type,
			Pattern: p.Pattern, Min: p.Min, Max: p.Max, Values: p.Values, Default: p.Default, Required: p.Default == nil,
			Secret: p.Secret, Units: p.Units})
	}
	return v
}

// actionSet returns the configured actions (an empty set when none).
func (s *Server) actionSet() *action.Set {
	if s.Actions == nil || s.Actions.Set == nil {
		return nil
	}
	return s.Actions.Set()
}

// pathAction is the action named by {name} that the principal may run.
// One it may not run is not found, as one that does not exist: the list
// of actions is the principal's own. The one message for both says so
// and where that list is: an admin who had just defined an action for
// the role ops was told only that it did not exist.
func (s *Server) pathAction(r *http.Request) (*action.Def, error) {
	name := chi.URLParam(r, "name")
	d := s.actionSet().Lookup(name)
	if d == nil || !d.Allows(principalOf(r)) {
		return nil, notFound("no action named " + printableName(name) + " that you may run: GET /v1/actions (orderly action ls) lists yours; an action's roles and principals say who may run it")
	}
	return d, nil
}

// handleActionList is GET /v1/actions: the actions this principal may run.
func (s *Server) handleActionList(w http.ResponseWriter, r *http.Request) {
	out := []ActionView{}
	for _, d := range s.actionSet().For(principalOf(r)) {
		out = append(out, viewOf(d))
	}
	encode(w, http.StatusOK, map[string]any{"actions": out})
}

// handleActionGet is GET /v1/actions/{name}.
func (s *Server) handleActionGet(w http.ResponseWriter, r *http.Request) {
	d, err := s.pathAction(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	v := viewOf(d)
	if s.notModified(w, r, etagOf(v)) { // the tag a run's If-Match names (ifmatch.go)
		return
	}
	encode(w, http.StatusOK, v)
}

// ActionRunRequest is the body of POST /v1/actions/{name}/run: the host
// and the values of the params, nothing else. Values may be JSON strings,
// numbers (int params) or booleans (bool params).
type ActionRunRequest struct {
	Host   string                     `json:"host"`
	Params map[string]json.RawMessage `json:"params"`
}

// handleActionRun is POST /v1/actions/{name}/run: the run becomes an
// order of kind action through the one intake path (validate, authorize
// by the action's definition, its run limit, record, publish) and is
// answered as POST /v1/orders answers: 202 with the order, with ?wait or
// Prefer: wait the finished order (200), Idempotency-Key honoured,
// X-Correlation-Id the order's correlation id (the body has no field for
// one); its output streams on GET /v1/orders/{id}/events.
func (s *Server) handleActionRun(w http.ResponseWriter, r *http.Request) {
	set := s.Settings()
	wait, err := waitOf(r, set.MaxWait)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	cond, err := ifMatchOf(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	d, err := s.pathAction(r)
	if err != nil {
		if s.answerRecordedRun(w, r, nil, wait) {
			return
		}
		if d := s.actionSet().Lookup(chi.URLParam(r, "name")); d != nil {
			// Answered as an action that does not exist, but a run the
			// action's principals and roles refuse is a policy refusal,
			// which the audit and orderly_rejections_total keep (a 404 is
			// not audited otherwise).
			s.audit(r, http.StatusNotFound, &order.Error{Code: order.CodeForbidden,
				Message: "action " + d.Name + ": principal " + principalOf(r).Name + " may not run it"}, nil)
		}
		s.writeError(w, r, err)
		return
	}
	// A web UI form that showed another definition runs nothing; refused
	// before its values are read, so the audit keeps none of them.
	if err := checkUIAction(r, d); err != nil {
		if !s.answerRecordedRun(w, r, nil, wait) {
			s.writeError(w, r, err)
		}
		return
	}
	// Nor does a REST run whose If-Match names another definition.
	if err := cond.check(etagOf(viewOf(d)), "action", d.Name); err != nil {
		if !s.answerRecordedRun(w, r, nil, wait) {
			s.writeError(w, r, err)
		}
		return
	}
	req, err := actionRunRequestOf(r, set.MaxBodyBytes)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	r = r.WithContext(context.WithValue(r.Context(), redactedKey{}, redactRun(d, req)))
	a := &order.Action{Name: d.Name, Params: map[string]string{}, Secrets: map[string]string{}}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range req.Params {
			if !yield(k) {
				return
			}
		}
	}) {
		v, err := action.Value(req.Params[name])
		if p := d.Param(name); p != nil && err == nil {
			v, err = p.Value(req.Params[name])
		}
		if err != nil {
			if s.answerRecordedRun(w, r, req, wait) {
				return
			}
			e := order.FieldError(order.CodeUnprocessable, "params."+printableName(name), "param %s: %s", printableName(name), err.Error())
			e.Details["param"] = printableName(name)
			s.writeError(w, r, e)
			return
		}
		if p := d.Param(name); p != nil && p.Secret {
			a.Secrets[name] = v
		} else {
			a.Params[name] = v
		}
	}
	key, err := idempotencyKeyOf(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	correlation, err := correlationOf(r.Header.Values(correlationHeader))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	o := &order.Order{ID: order.NewID(), Kind: order.KindAction, Host: req.Host, Command: action.Command(d.Name),
		CaptureStdout: true, CaptureStderr: true, Source: "rest", Action: a, IdempotencyKey: key}
	// The header is the run's only source of one: the body has no field.
	correlate(o, correlation)
	final, err := s.SubmitOrder(r.Context(), principalOf(r), o, wait)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	setReplayed(w, final.ID != o.ID)
	s.encodeSubmitted(w, r, final)
}

// actionRunRequestOf reads a run's body, which may be left out.
func actionRunRequestOf(r *http.Request, maxBytes int64) (*ActionRunRequest, error) {
	req := &ActionRunRequest{}
	if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		if err := decode(r, maxBytes, req); err != nil {
			return nil, err
		}
	}
	return req, nil
}

// answerRecordedRun answers a keyed run that the action's definition now
// refuses (gone, no longer the principal's, another definition than its
// If-Match names, a param rule changed) with the run its key recorded,
// when it asks for the same run, and reports whether it did; the caller
// refuses it otherwise. The first try was accepted and may have run: the
// retry of a client that lost its answer gets that answer, not a refusal
// that says nothing ran (intake.Service.Recorded). The request is read
// without the definition: which params are secret (left out of the
// request's sum) comes from the recorded run, and each value is read as
// Value reads it, which a param's own reading only narrows. req is the
// body when the handler read it already.
func (s *Server) answerRecordedRun(w http.ResponseWriter, r *http.Request, req *ActionRunRequest, wait time.Duration) bool {
	if len(r.Header.Values("Idempotency-Key")) == 0 {
		return false
	}
	key, err := idempotencyKeyOf(r)
	if err != nil {
		return false
	}
	p, name := principalOf(r), chi.URLParam(r, "name")
	prev, err := s.Store.RecordedByKey(r.Context(), p.Name, key)
	if err != nil || prev == nil || prev.Kind != order.KindAction || prev.Action == nil || prev.Action.Name != name {
		return false
	}
	if req == nil {
		if req, err = actionRunRequestOf(r, s.Settings().MaxBodyBytes); err != nil {
			return false
		}
	}
	a := &order.Action{Name: name, Params: map[string]string{}, Secrets: map[string]string{}}
	for k, raw := range req.Params {
		v, err := action.Value(raw)
		if err != nil {
			return false
		}
		if slices.Contains(prev.Action.SecretNames, k) {
			a.Secrets[k] = v
		} else {
			a.Params[k] = v
		}
	}
	o := &order.Order{ID: order.NewID(), Kind: order.KindAction, Host: req.Host, Command: action.Command(name),
		CaptureStdout: true, CaptureStderr: true, Source: "rest", Action: a, IdempotencyKey: key}
	final, err := s.recordedOrder(r.Context(), p, o, wait, s.Store.GetOrder)
	if final == nil && err == nil {
		return false
	}
	if err != nil {
		s.writeError(w, r, err)
		return true
	}
	w.Header().Set(replayedHeader, "true")
	s.encodeSubmitted(w, r, final)
	return true
}

// redactRun is what the audit may keep of a run request: the values of
// the params that are not secret, the names of the others.
func redactRun(d *action.Def, req *ActionRunRequest) map[string]any {
	params, hidden := map[string]string{}, []string{}
	for k, raw := range req.Params {
		if p := d.Param(k); p != nil && !p.Secret {
			if v, err := action.Value(raw); err == nil && len(v) <= 256 {
				params[k] = v
				continue
			}
		}
		hidden = append(hidden, printableName(k))
	}
	slices.Sort(hidden)
	return map[string]any{"action": d.Name, "host": req.Host, "params": params, "withheld_params": hidden}
}

// OrderAction is the action of an order as the API shows it: the values
// of its params, and only the names of the secret ones.
type OrderAction struct {
	Name         string            `json:"name"`
	Params       map[string]string `json:"params"`
	SecretParams []string          `json:"secret_params"`
}

func orderActionOf(a *order.Action) *OrderAction {
	if a == nil {
		return nil
	}
	oa := &OrderAction{Name: a.Name, Params: a.Params, SecretParams: a.SecretNames}
	if oa.Params == nil {
		oa.Params = map[string]string{}
	}
	if oa.SecretParams == nil {
		oa.SecretParams = []string{}
	}
	return oa
}

// handleActionChoices is GET /v1/actions/{name}/choices?host=: for each
// param whose values come from the host's systemd units, those units with
// their state, so a page can offer one button per unit. Units whose value
// a run would refuse (the param's rules, the unit name it renders) are
// listed with valid false.
func (s *Server) handleActionChoices(w http.ResponseWriter, r *http.Request) {
	d, err := s.pathAction(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q, err := queryOf(r, []string{"host"})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	host := q.Get("host")
	if err := order.CheckHost(host); err != nil {
		s.writeError(w, r, err)
		return
	}
	if !d.AllowsHost(host) {
		s.writeError(w, r, &order.Error{Code: order.CodeForbidden, Message: "action " + d.Name + ": host " + host + " is not one of its hosts",
			Details: map[string]any{"reason": "action_host", "action": d.Name, "field": "host"}})
		return
	}
	type choice struct {
		Value string `json:"value"`
		Valid bool   `json:"valid"`
		UnitChoice
	}
	out := map[string][]choice{}
	for _, p := range d.Params {
		if p.Units == "" {
			continue
		}
		if s.Actions.Choices == nil {
			s.writeError(w, r, order.Errorf(order.CodeUnavailable, "unit choices are not available from this API"))
			return
		}
		units, err := s.Actions.Choices(r.Context(), host, p.Units)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		list := []choice{}
		for _, u := range units {
			v, ok := action.UnitValue(p.Units, u.Unit)
			if !ok {
				continue
			}
			list = append(list, choice{Value: v, Valid: d.CheckChoice(p, v) == nil, UnitChoice: u})
		}
		out[p.Name] = list
	}
	encode(w, http.StatusOK, map[string]any{"action": d.Name, "host": host, "params": out})
}
