package api

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
)

// signinPage is GET /ui/signin. The form carries a nonce that must match a
// SameSite=Strict cookie, so another site cannot sign a browser in to an
// account of its choosing (login CSRF).
func (u *webUI) signinPage(w http.ResponseWriter, r *http.Request) {
	nonce := randomToken()
	u.setSigninNonce(w, r, nonce)
	u.pages.render(w, r, http.StatusOK, "signin", pageData{Title: "Sign in",
		D: map[string]string{"Nonce": nonce, "Next": safeNext(r.URL.Query().Get("next"))}})
}

// setSigninNonce sets the sign-in form's nonce cookie: ten minutes,
// HttpOnly, SameSite=Strict, and over TLS Secure and host-only (uiCookie).
func (u *webUI) setSigninNonce(w http.ResponseWriter, r *http.Request, nonce string) {
	name, path := u.uiCookie(r, uiSigninCookie, "/ui/signin")
	http.SetCookie(w, &http.Cookie{Name: name, Value: nonce, Path: path, HttpOnly: true,
		Secure: u.overTLS(r), SameSite: http.SameSiteStrictMode, MaxAge: 600})
}

// safeNext keeps a post-sign-in redirect inside /ui/.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/ui/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/ui/"
	}
	return next
}

// overTLS reports whether the browser's request came over TLS: to the
// API itself, or to a proxy of acl.trusted_proxies that says so with
// X-Forwarded-Proto: https (the last value, the nearest proxy's). The
// cookies are Secure then: behind a proxy that ends TLS, they would
// otherwise travel over plain HTTP too, to that host's port 80.
func (u *webUI) overTLS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	acl := u.s.Settings().ACL
	v := r.Header.Values("X-Forwarded-Proto")
	if acl == nil || len(v) == 0 || !acl.FromTrustedProxy(r.RemoteAddr) {
		return false
	}
	last := v[len(v)-1]
	if i := strings.LastIndexByte(last, ','); i >= 0 {
		last = last[i+1:]
	}
	return strings.EqualFold(strings.TrimSpace(last), "https")
}

// signin is POST /ui/signin: the token is checked by the API's own
// authenticator, then kept in a server-side session; the browser gets only
// the session id, in an HttpOnly, SameSite=Strict cookie (Secure over TLS).
func (u *webUI) signin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	nonceName, noncePath := u.uiCookie(r, uiSigninCookie, "/ui/signin")
	c, err := r.Cookie(nonceName)
	if err != nil || r.PostFormValue("signin") == "" || c.Value != r.PostFormValue("signin") {
		u.s.logger.Warn("ui sign-in refused: form not from this browser", "client_ip", clientIPOf(r))
		u.pages.errorPage(w, r, http.StatusForbidden, "This sign-in form did not come from this browser. Open the sign-in page again.")
		return
	}
	token := strings.TrimSpace(r.PostFormValue("token"))
	p, err := u.s.Auth().Authenticate("Bearer " + token)
	if token == "" || err != nil {
		// Recorded like a refused REST request: who tried from where,
		// never the token; a flooding address's counted only.
		if u.s.recordRefusal(clientIPOf(r), "") {
			u.s.Intake.Reject(r.Context(), postgres.Rejection{ClientIP: clientIPOf(r), Source: "ui", Method: r.Method,
				Path: r.URL.Path, Status: http.StatusUnauthorized, Code: string(order.CodeUnauthenticated),
				Reason: "sign-in with a token that was not accepted"})
		} else {
			u.s.Intake.Unrecorded(string(order.CodeUnauthenticated))
		}
		u.signinAgain(w, r, "That token was not accepted.")
		return
	}
	id, _ := u.sessions.create(token, p.Name)
	name, path := u.uiCookie(r, uiSessionCookie, "/ui/")
	http.SetCookie(w, &http.Cookie{Name: name, Value: id, Path: path, HttpOnly: true,
		Secure: u.overTLS(r), SameSite: http.SameSiteStrictMode})
	http.SetCookie(w, &http.Cookie{Name: nonceName, Value: "", Path: noncePath, Secure: u.overTLS(r), MaxAge: -1})
	u.s.logger.Info("ui signed in", "principal", p.Name, "client_ip", clientIPOf(r))
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

func (u *webUI) signinAgain(w http.ResponseWriter, r *http.Request, msg string) {
	nonce := randomToken()
	u.setSigninNonce(w, r, nonce)
	u.pages.render(w, r, http.StatusUnauthorized, "signin", pageData{Title: "Sign in", Error: msg,
		D: map[string]string{"Nonce": nonce, "Next": safeNext(r.PostFormValue("next"))}})
}

// signout is POST /ui/signout: the session ends on the server too.
func (u *webUI) signout(w http.ResponseWriter, r *http.Request) {
	if c, err := u.sessionCookie(r); err == nil {
		u.sessions.drop(c.Value)
	}
	name, path := u.uiCookie(r, uiSessionCookie, "/ui/")
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: path, HttpOnly: true,
		Secure: u.overTLS(r), SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, "/ui/signin", http.StatusSeeOther)
}

// execForm is the "run a command" form as the dashboard shows it.
type execForm struct {
	Host, Command, RunAs, Timeout, Args string
	EnvNames                            string // of the order being re-run: values must be given again
	EnvHint                             string
}

// dashboardView is the dashboard's data.
type dashboardView struct {
	Actions   []actionView
	Runbooks  []RunbookSummary
	Recent    []Order
	HostNames []string
	Exec      execForm
	Idem      string // the idempotency key of this rendering's forms
}

// dashboard is GET /ui/: the actions this principal may run, the command
// form (pre-filled by ?rerun=<order>), runbooks and recent orders.
func (u *webUI) dashboard(w http.ResponseWriter, r *http.Request) {
	u.renderDashboard(w, r, http.StatusOK, "", nil)
}

// renderDashboard shows the dashboard, with msg as an error and form as
// the command form's values when a submission was refused; refused, when
// set, is an action run that was refused, whose form keeps its values.
func (u *webUI) renderDashboard(w http.ResponseWriter, r *http.Request, status int, msg string, form *execForm, refused ...Order) {
	v := dashboardView{Idem: formKey(r, status), Exec: execForm{EnvHint: "NAME=value"}}
	names, offline := u.knownHosts(r)
	v.HostNames = names
	// The command form starts on the one host with a worker online
	// (serve's own on a fresh `make run`, where an empty field only said
	// "Please fill out this field"), as an action's dropdown starts on an
	// online host. With several it names none: a guess would run the
	// command where the user did not look.
	if online := slices.DeleteFunc(slices.Clone(names), func(h string) bool { return offline[h] }); len(online) == 1 {
		v.Exec.Host = online[0]
	}
	v.Actions = u.actions(r)
	var rb struct {
		Runbooks []RunbookSummary `json:"runbooks"`
	}
	if a := u.call(r, http.MethodGet, "/v1/runbooks", nil); a.ok() && a.decode(&rb) == nil {
		v.Runbooks = rb.Runbooks
	}
	// The principal's own recent orders, an admin's or an auditor's too
	// (History has everyone's for them).
	var recent OrderList
	if a := u.call(r, http.MethodGet, "/v1/orders?limit=10&principal="+url.QueryEscape(sessionOf(r).principal), nil); a.ok() {
		_ = a.decode(&recent)
	}
	v.Recent = recent.Orders
	if id := r.URL.Query().Get("rerun"); id != "" && form == nil {
		var o Order
		a := u.call(r, http.MethodGet, "/v1/orders/"+url.PathEscape(id), nil)
		switch {
		case a.ok() && a.decode(&o) == nil && o.Action != nil:
			msg = u.prefillAction(&v, o)
		case a.ok() && o.Kind == "exec" && (strings.ContainsFunc(o.Command, isBidiControl) ||
			slices.ContainsFunc(o.Args, func(a string) bool { return strings.ContainsFunc(a, isBidiControl) })):
			// A field shows such a character as what it does: the text
			// after it reordered, a command that reads as another.
			msg = "That order cannot be re-run from here: its command or an argument holds a bidi control " +
				"(U+202A–U+202E, U+2066–U+2069), which the form would show reordered. Re-run it with the CLI or the API."
		case a.ok() && o.Kind == "exec" && !oneArgPerLine(o.Args):
			// The form would split or drop them: a different command.
			msg = "That order cannot be re-run from here: an argument holds a line break or is empty at the end, " +
				"which the form (one argument per line) cannot carry. Re-run it with the CLI or the API."
		case a.ok() && o.Kind == "exec":
			v.Exec = execForm{Host: o.Host, Command: o.Command, RunAs: o.RunAs, Args: strings.Join(o.Args, "\n"),
				EnvNames: strings.Join(o.EnvNames, ", "), EnvHint: envHint(o.EnvNames)}
			if o.TimeoutSecs > 0 {
				v.Exec.Timeout = strconv.FormatFloat(o.TimeoutSecs, 'f', -1, 64)
			}
		case a.ok():
			msg = "That order cannot be re-run from here."
		default:
			msg = "That order cannot be re-run from here: " + a.problem()
		}
	}
	if form != nil {
		v.Exec = *form
	}
	for _, o := range refused {
		u.prefillAction(&v, o) // msg stays the refusal
	}
	held, _ := r.Context().Value(uiHeldByKey{}).(string)
	u.pages.render(w, r, status, "dashboard", pageData{Title: "Dashboard", Nav: "dashboard", Error: msg, ErrorOrder: held, D: v})
}

// uiHeldByKey carries, on the request a refused action run renders the
// dashboard for, the order holding the action's concurrent_per_host
// slot (the 429's details.held_by), which the error links to.
type uiHeldByKey struct{}

// oneArgPerLine reports whether the exec form, one argument per line with
// the trailing line breaks trimmed, gives back exactly args.
func oneArgPerLine(args []string) bool {
	for _, a := range args {
		if strings.ContainsAny(a, "\r\n") {
			return false
		}
	}
	return len(args) == 0 || args[len(args)-1] != ""
}

// prefillAction fills the form of o's action with o's host and the values
// of its params; secret values were never kept, so they are asked again.
func (u *webUI) prefillAction(v *dashboardView, o Order) string {
	for i := range v.Actions {
		av := &v.Actions[i]
		if av.Name != o.Action.Name {
			continue
		}
		av.Host = o.Host
		if !slices.Contains(av.HostNames, o.Host) {
			av.HostNames = append(av.HostNames, o.Host)
		}
		av.Fields = u.fieldsOf(av.ActionView, o.Action.Params, nil)
		if len(o.Action.SecretParams) > 0 {
			return "Re-run of " + o.Action.Name + ": give " + strings.Join(o.Action.SecretParams, ", ") + " again; secret values are never kept."
		}
		return ""
	}
	return "You may no longer run the action " + o.Action.Name + "."
}

func envHint(names []string) string {
	if len(names) == 0 {
		return "NAME=value"
	}
	return strings.Join(names, "=…\n") + "=…"
}

// hostNames lists the known hosts for the forms' host fields.
func (u *webUI) hostNames(r *http.Request) []string {
	names, _ := u.knownHosts(r)
	return names
}

// knownHosts lists the known hosts and which of them have no worker
// online: a host is known from a queued order alone, a typo's too. A
// host listed without its heartbeat (Host.Registry: NATS did not answer)
// is not known to be offline, and is not marked.
func (u *webUI) knownHosts(r *http.Request) ([]string, map[string]bool) {
	var hs struct {
		Hosts []Host `json:"hosts"`
	}
	offline := map[string]bool{}
	if a := u.call(r, http.MethodGet, "/v1/hosts", nil); !a.ok() || a.decode(&hs) != nil {
		return nil, offline
	}
	out := make([]string, 0, len(hs.Hosts))
	for _, h := range hs.Hosts {
		out = append(out, h.Host)
		if !h.Online && h.Registry == "" {
			offline[h.Host] = true
		}
	}
	return out, offline
}

// submitExec is POST /ui/exec: the form becomes the same JSON body a REST
// client sends to POST /v1/orders, with the form's idempotency key, so a
// double submit is one order.
func (u *webUI) submitExec(w http.ResponseWriter, r *http.Request) {
	f := execForm{Host: strings.TrimSpace(r.PostFormValue("host")), Command: strings.TrimSpace(r.PostFormValue("command")),
		RunAs: strings.TrimSpace(r.PostFormValue("run_as")), Timeout: strings.TrimSpace(r.PostFormValue("timeout_seconds")),
		Args: r.PostFormValue("args"), EnvHint: "NAME=value"}
	req := SubmitRequest{Host: f.Host, Command: f.Command, RunAs: f.RunAs}
	// The trailing line breaks are trimmed first: a box holding only a
	// line break has no arguments, not one empty one (which the form could
	// not carry into a re-run).
	if args := strings.TrimRight(f.Args, "\r\n"); args != "" {
		req.Args = strings.Split(strings.ReplaceAll(args, "\r\n", "\n"), "\n")
	}
	if f.Timeout != "" {
		t, ok := parseSeconds(f.Timeout)
		if !ok {
			u.renderDashboard(w, r, http.StatusBadRequest, "Timeout must be a number of seconds.", &f)
			return
		}
		req.TimeoutSeconds = t
	}
	if env := strings.TrimSpace(r.PostFormValue("env")); env != "" {
		req.Env = map[string]string{}
		for _, line := range strings.Split(strings.ReplaceAll(env, "\r\n", "\n"), "\n") {
			if strings.TrimSpace(line) == "" {
				continue
			}
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				u.renderDashboard(w, r, http.StatusBadRequest, "Each environment line must be NAME=value.", &f)
				return
			}
			req.Env[strings.TrimSpace(k)] = v
		}
	}
	// A browser sends a textarea's line breaks as CRLF whatever was
	// typed; the command gets what was typed, as from the CLI.
	if in := strings.ReplaceAll(r.PostFormValue("stdin"), "\r\n", "\n"); in != "" {
		req.Stdin = &StreamIn{Content: in}
	}
	var hdr []string
	if k := r.PostFormValue("idem"); k != "" && len(k) <= 64 {
		hdr = []string{"Idempotency-Key", "ui-" + k}
	}
	a := u.call(r, http.MethodPost, "/v1/orders", req, hdr...)
	if id := a.recorded(); id != "" {
		http.Redirect(w, r, "/ui/orders/"+id+"?recorded=1", http.StatusSeeOther)
		return
	}
	if a.status >= 500 {
		u.renderDashboard(w, r, a.status, unknownOutcome(a.problem()), &f)
		return
	}
	if !a.ok() {
		u.renderDashboard(w, r, a.status, a.problem(), &f)
		return
	}
	var o Order
	if err := a.decode(&o); err != nil {
		u.pages.errorPage(w, r, http.StatusBadGateway, "The order was accepted but its answer could not be read.")
		return
	}
	http.Redirect(w, r, "/ui/orders/"+o.ID.String(), http.StatusSeeOther)
}
