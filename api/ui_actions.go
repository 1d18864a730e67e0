package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/go-chi/chi/v5"
)

// actionView is one action's button and fields on the dashboard.
type actionView struct {
	ActionView
	HostNames []string        // the known hosts its host globs match
	Offline   map[string]bool // those with no worker online, marked in the list
	Host      string          // pre-selected: a re-run's, else the first online
	Digest    string          // the definition the form shows (actionDigest), sent back with it
	Fields    []paramField
	Error     string // why its unit choices could not be listed
	HasUnits  bool   // a param takes its choices from the host's units
}

// paramField is one param's form field.
type paramField struct {
	Action, Name, Label, Help, Type, Pattern, Value string
	Required, Secret                                bool
	// Blank is set when "" passes the param's rules: the field may be
	// sent empty, so the page does not mark it required.
	Blank   bool
	Choices []choiceField
}

// choiceField is one value of a dropdown: an enum value or a unit found
// on the host, greyed out when a run of it would be refused.
type choiceField struct {
	Value, Label       string
	Disabled, Selected bool
}

// actions lists the actions r's principal may run (GET /v1/actions: the
// API decides, so a principal without the role sees no button).
func (u *webUI) actions(r *http.Request) []actionView {
	var list struct {
		Actions []ActionView `json:"actions"`
	}
	if a := u.call(r, http.MethodGet, "/v1/actions", nil); !a.ok() || a.decode(&list) != nil {
		return nil
	}
	hosts, offline := u.knownHosts(r)
	out := make([]actionView, 0, len(list.Actions))
	for _, av := range list.Actions {
		v := actionView{ActionView: av, Digest: actionDigest(av), Offline: offline}
		for _, h := range hosts {
			for _, g := range av.Hosts {
				if ok, _ := path.Match(g, h); ok {
					v.HostNames = append(v.HostNames, h)
					break
				}
			}
		}
		// The first host with a worker online: a host is listed from
		// one queued order for it, and a button pointed at a host no
		// worker serves queues a run that waits there unseen.
		for _, h := range v.HostNames {
			if !offline[h] {
				v.Host = h
				break
			}
		}
		if v.Host == "" && len(v.HostNames) > 0 {
			v.Host = v.HostNames[0]
		}
		v.Fields = u.fieldsOf(av, nil, nil)
		for _, p := range av.Params {
			v.HasUnits = v.HasUnits || p.Units != ""
		}
		out = append(out, v)
	}
	return out
}

// fieldsOf builds an action's fields, with values (a re-run's; never
// secret ones) and the host's unit choices when known. Whether a field
// may be sent empty is the API's own check of "" (Param.Check).
func (u *webUI) fieldsOf(av ActionView, values map[string]string, choices map[string][]unitChoiceJSON) []paramField {
	d := u.s.actionSet().Lookup(av.Name)
	out := make([]paramField, 0, len(av.Params))
	for _, p := range av.Params {
		f := paramField{Action: av.Name, Name: p.Name, Label: p.Title, Help: p.Description, Type: p.Type, Pattern: browserPattern(p.Pattern),
			Required: p.Required, Secret: p.Secret}
		if dp := d.Param(p.Name); dp != nil {
			f.Blank = dp.Check("") == nil
		}
		if f.Label == "" {
			f.Label = p.Name
		}
		if p.Default != nil {
			f.Value = *p.Default
		}
		if v, ok := values[p.Name]; ok && !p.Secret {
			f.Value = v
		}
		if p.Secret {
			f.Value = "" // asked for every run, a re-run included
			if p.Type == "bool" && p.Default != nil {
				// A checkbox is always sent (unticked is "false", never
				// "the default"): it starts as the default, as a
				// non-secret one does, or a default true ran as false.
				f.Value = *p.Default
			}
		}
		for _, ev := range p.Values {
			f.Choices = append(f.Choices, choiceField{Value: ev, Label: ev, Selected: ev == f.Value})
		}
		for _, c := range choices[p.Name] {
			label := c.Value + " (" + c.ActiveState + ")"
			if c.SubState != "" && c.SubState != c.ActiveState {
				label = c.Value + " (" + c.ActiveState + ", " + c.SubState + ")"
			}
			f.Choices = append(f.Choices, choiceField{Value: c.Value, Label: label, Disabled: !c.Valid, Selected: c.Value == f.Value})
		}
		if cs := choices[p.Name]; len(cs) > 0 && f.Value != "" && !slices.ContainsFunc(cs, func(c unitChoiceJSON) bool { return c.Value == f.Value }) {
			// A value the form had (a re-run's, a refused run's) whose
			// unit the host does not list now: systemd unloads a stopped
			// instance, which a run still starts. It stays chosen, and
			// says so, instead of "(choose)" with nothing said.
			ok := true
			if dp := d.Param(p.Name); dp != nil {
				ok = dp.Check(f.Value) == nil
			}
			f.Choices = append(f.Choices, choiceField{Value: f.Value, Label: f.Value + " (not loaded on this host)", Disabled: !ok, Selected: ok})
		}
		out = append(out, f)
	}
	return out
}

// notForBrowsers finds RE2 syntax that a browser may read otherwise. A
// browser compiles a pattern attribute as JavaScript with the v flag,
// where [[:digit:]] is a class of the characters ":digt" and && and --
// inside a class are set operations: it would refuse a value the param
// accepts ("0042" for [[:digit:]]{4}) and never send the form. Flags,
// \Q…\E, \p, \A, \z, \C and \x{…} are left out with them.
var notForBrowsers = regexp.MustCompile(`\[:|&&|--|\(\?[^:]|\\[QEpPAzCx]`)

// browserPattern is a param's pattern as the form's pattern attribute,
// which only spares a round trip: empty when a browser might read it
// otherwise than RE2 (the API checks every value either way).
func browserPattern(pattern string) string {
	if notForBrowsers.MatchString(pattern) {
		return ""
	}
	return pattern
}

// unitChoiceJSON is one choice of GET /v1/actions/{name}/choices.
type unitChoiceJSON struct {
	Value string `json:"value"`
	Valid bool   `json:"valid"`
	UnitChoice
}

// actionChoices is GET /ui/actions/{name}/choices?host=: the action's
// fields again, with the units found on that host as dropdowns (an htmx
// fragment for the host selector).
func (u *webUI) actionChoices(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	var av ActionView
	if a := u.call(r, http.MethodGet, "/v1/actions/"+url.PathEscape(name), nil); !a.ok() || a.decode(&av) != nil {
		http.Error(w, a.problem(), a.status)
		return
	}
	var ch struct {
		Params map[string][]unitChoiceJSON `json:"params"`
	}
	hasUnits := false
	for _, p := range av.Params {
		hasUnits = hasUnits || p.Units != ""
	}
	msg := ""
	if hasUnits {
		a := u.call(r, http.MethodGet, "/v1/actions/"+url.PathEscape(name)+"/choices?host="+url.QueryEscape(r.URL.Query().Get("host")), nil)
		if !a.ok() || a.decode(&ch) != nil {
			msg = a.problem()
		}
	}
	// The values already in the form stay (never secret ones: fieldsOf).
	values := map[string]string{}
	for k, v := range r.URL.Query() {
		if name, ok := strings.CutPrefix(k, "p."); ok && len(v) > 0 {
			values[name] = v[len(v)-1]
		}
	}
	var buf bytes.Buffer
	d := struct {
		Fields []paramField
		Error  string
	}{u.fieldsOf(av, values, ch.Params), msg}
	if err := u.pages.byName["dashboard"].ExecuteTemplate(&buf, "fields", d); err != nil {
		http.Error(w, "fragment failed to render", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = buf.WriteTo(w)
}

// runAction is POST /ui/actions/{name}/run: the form becomes the body of
// POST /v1/actions/{name}/run (every value as a JSON string, as the
// params' rules expect text), with the form's idempotency key. A field
// left empty is left out when its param has a default (the dropdown's
// "(default)", a secret asked every run), so the default applies; a
// param without one is sent "", which its rules accept or refuse, as in
// a run over REST (left out, it would be refused as missing).
func (u *webUI) runAction(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	_ = r.ParseForm()
	// Whether a param has a default is the action's, as fieldsOf reads it;
	// the run below is what checks who may run it.
	d := u.s.actionSet().Lookup(name)
	required := func(param string) bool {
		p := d.Param(param)
		return p != nil && p.Default == nil
	}
	req := ActionRunRequest{Host: strings.TrimSpace(r.PostFormValue("host")), Params: map[string]json.RawMessage{}}
	keys := make([]string, 0)
	for k := range r.PostForm {
		if strings.HasPrefix(k, "p.") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		vals := r.PostForm[k]
		v := vals[len(vals)-1] // a checkbox follows its hidden "false"
		if v == "" && !required(strings.TrimPrefix(k, "p.")) {
			continue // left empty: the param's default
		}
		b, _ := json.Marshal(v)
		req.Params[strings.TrimPrefix(k, "p.")] = b
	}
	// The form comes back as it was sent when it goes no further
	// (fieldsOf never shows a secret's value).
	again := func(status int, msg string) {
		o := Order{Host: req.Host, Action: &OrderAction{Name: name, Params: map[string]string{}}}
		for _, k := range keys {
			o.Action.Params[strings.TrimPrefix(k, "p.")] = r.PostForm[k][len(r.PostForm[k])-1]
		}
		u.renderDashboard(w, r, status, "Action "+name+": "+msg, nil, o)
	}
	// The run is bound to the definition the form showed, and an action
	// that asks for a confirmation gets it here too, not only from the
	// page's script (without JavaScript the form's confirmation is a
	// required checkbox): checked by the run itself (checkUIAction).
	bound := withUIForm(r, uiForm{Def: r.PostFormValue("def"), Confirmed: r.PostFormValue("confirmed") == "yes"})
	// The dashboard's forms share one key per rendering: each action's
	// form uses it with its name, so a double press of one form is one
	// run, and another form of the same page is a run of its own rather
	// than a reuse of the key for a different request (422).
	var hdr []string
	if k := r.PostFormValue("idem"); k != "" && len(k) <= 64 {
		hdr = []string{"Idempotency-Key", "ui-" + k + "-" + name}
	}
	a := u.call(bound, http.MethodPost, "/v1/actions/"+url.PathEscape(name)+"/run", req, hdr...)
	if a.reason() == "action_changed" {
		// The form is shown again as the action is now, without the
		// values typed into the old one: a value typed into a secret's
		// field must not come back in a field that is no longer one.
		u.renderDashboard(w, r, a.status, "Action "+name+" changed since the page was loaded; nothing was run. "+
			"Its form below is as it is now: check it and run it again.", nil, Order{Host: req.Host, Action: &OrderAction{Name: name}})
		return
	}
	if id := a.recorded(); id != "" {
		http.Redirect(w, r, "/ui/orders/"+id+"?recorded=1", http.StatusSeeOther)
		return
	}
	if a.status >= 500 {
		again(a.status, unknownOutcome(a.problem()))
		return
	}
	if !a.ok() {
		if id := a.heldBy(); id != "" {
			r = r.WithContext(context.WithValue(r.Context(), uiHeldByKey{}, id))
		}
		again(a.status, a.problem())
		return
	}
	var o Order
	if err := a.decode(&o); err != nil {
		u.pages.errorPage(w, r, http.StatusBadGateway, "The run was accepted but its answer could not be read.")
		return
	}
	http.Redirect(w, r, "/ui/orders/"+o.ID.String(), http.StatusSeeOther)
}
