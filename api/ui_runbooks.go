package api

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"github.com/go-chi/chi/v5"
)

// runbookPath is the native path of the runbook named in r's {name},
// decoded first (runbookName) so that it is escaped once.
func runbookPath(r *http.Request) string {
	name, err := runbookName(r)
	if err != nil {
		name = chi.URLParam(r, "name") // the native route answers the 404
	}
	return "/v1/runbooks/" + url.PathEscape(name)
}

type runbookPageView struct {
	RB        RunbookView
	HostNames []string
	Idem      string // the idempotency key of this rendering's form
	// DefaultHost is where a run that names no host goes: runbooks.host
	// (under serve, serve's own host when that is unset). The host field
	// shows it, and is required when it is empty: its placeholder said
	// "(runbooks.host)", which a newcomer on serve, who had set no such
	// key, read as a setting to make before running anything.
	DefaultHost string
	// Host is the host a refused run named, shown again; its variables'
	// values are not (EnvAgain), as the command form never shows
	// environment values again.
	Host     string
	EnvAgain bool
}

// runbookPage is GET /ui/runbooks/{name}: the runbook with a field for
// each variable it requires and a host.
func (u *webUI) runbookPage(w http.ResponseWriter, r *http.Request) {
	u.renderRunbook(w, r, http.StatusOK, "")
}

// renderRunbook shows the runbook's page with status, and msg as an
// error when a run from it was refused.
func (u *webUI) renderRunbook(w http.ResponseWriter, r *http.Request, status int, msg string) {
	v := runbookPageView{Idem: formKey(r, status)}
	a := u.call(r, http.MethodGet, runbookPath(r), nil)
	if !a.ok() || a.decode(&v.RB) != nil {
		u.pages.errorPage(w, r, a.status, a.problem())
		return
	}
	v.HostNames = u.hostNames(r)
	if r.Method == http.MethodPost {
		v.Host = r.PostFormValue("host")
		for k, vals := range r.PostForm {
			if strings.HasPrefix(k, "env.") && len(vals) > 0 && vals[len(vals)-1] != "" {
				v.EnvAgain = true
			}
		}
	}
	if d := u.s.Runbooks; d != nil {
		v.DefaultHost = d.Config().Host
	}
	u.pages.render(w, r, status, "runbook", pageData{Title: bidiEscaped(v.RB.Name), Nav: "dashboard", Error: msg, D: v})
}

// runRunbook is POST /ui/runbooks/{name}/run: POST
// /v1/runbooks/{name}/execute with the form's variables and host, and
// the form's idempotency key, so a double submit is one run.
func (u *webUI) runRunbook(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	// A runbook's run is always confirmed (the page's dialog, or without
	// JavaScript the form's checkbox), by the server too: a form without
	// it runs nothing, as an action's with confirm: true.
	if r.PostFormValue("confirmed") != "yes" {
		u.renderRunbook(w, r, http.StatusUnprocessableEntity, "Confirm the run first (nothing was run).")
		return
	}
	req := RunbookRequest{Host: strings.TrimSpace(r.PostFormValue("host")), EnvVars: map[string]json.RawMessage{}}
	for k := range r.PostForm {
		if name, ok := strings.CutPrefix(k, "env."); ok {
			b, _ := json.Marshal(r.PostForm.Get(k))
			req.EnvVars[name] = b
		}
	}
	var hdr []string
	if k := r.PostFormValue("idem"); k != "" && len(k) <= 64 {
		hdr = []string{"Idempotency-Key", "ui-" + k}
	}
	// The run is bound to the runbook the page showed (ui_formbind.go).
	bound := withUIForm(r, uiForm{Def: r.PostFormValue("def")})
	a := u.call(bound, http.MethodPost, runbookPath(r)+"/execute", req, hdr...)
	if a.reason() == "runbook_changed" {
		u.renderRunbook(w, r, a.status, "The runbook changed since the page was loaded; nothing was run. "+
			"It is shown below as it is now: check it and run it again.")
		return
	}
	if id := a.recorded(); id != "" {
		http.Redirect(w, r, "/ui/orders/"+id+"?recorded=1", http.StatusSeeOther)
		return
	}
	if a.status >= 500 {
		u.renderRunbook(w, r, a.status, unknownOutcome(a.problem()))
		return
	}
	var o Order
	if !a.ok() {
		// Refused (its Required Claims, the policy, a bad host, a
		// variable): said on the runbook's page, its host kept, not on
		// an error page whose only way on is the dashboard.
		u.renderRunbook(w, r, a.status, a.problem()+" (nothing was run)")
		return
	}
	if a.decode(&o) != nil {
		u.pages.errorPage(w, r, a.status, a.problem())
		return
	}
	http.Redirect(w, r, "/ui/orders/"+o.ID.String(), http.StatusSeeOther)
}
