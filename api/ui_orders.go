package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/orderly-run/orderly/internal/order"
)

// orderPath is the native path of the order named in r's {id}.
func orderPath(r *http.Request) string { return "/v1/orders/" + url.PathEscape(chi.URLParam(r, "id")) }

// runPage is GET /ui/orders/{id}: the order, its output and, while it
// runs, live output through events.
func (u *webUI) runPage(w http.ResponseWriter, r *http.Request) {
	a := u.call(r, http.MethodGet, orderPath(r), nil)
	var o Order
	if !a.ok() || a.decode(&o) != nil {
		if a.code() == order.CodeUnavailable {
			// PostgreSQL out of reach (down, restarting): the page says so
			// and goes on checking, as the page it stands for would.
			u.pages.unreachablePage(w, r, "the order")
			return
		}
		u.pages.errorPage(w, r, a.status, a.problem())
		return
	}
	v := newRunView(o)
	if o.Action != nil {
		if d := u.s.actionSet().Lookup(o.Action.Name); d != nil && d.Verb != "" {
			v.Job = true
		}
	}
	if !v.Terminal {
		v.HostNote = u.hostNote(r, o)
		if o.Status == order.StatusQueued && r.URL.Query().Get("recorded") != "" {
			// The run's answer said the order was recorded, not queued:
			// it is, and it runs once NATS is back (the intake's sweep).
			v.Notes = append(v.Notes, "The order was recorded, but the message bus was unavailable: it is queued automatically when the bus is back, and runs then. Do not run it again.")
		}
	}
	u.pages.render(w, r, http.StatusOK, "run", pageData{Title: orderTitle(o), D: v})
}

// hostNote says, of an order not yet ended, that no worker of its host
// is online: a page that showed only "queued" or "running" left the
// person pressing the button waiting for what will not come until a
// worker is back. "" when the host's worker is online, or when the API
// cannot say (the page then claims nothing): an error, or a host listed
// without its heartbeat (Host.Registry: NATS did not answer), whose
// online reads false whatever its worker does.
func (u *webUI) hostNote(r *http.Request, o Order) string {
	a := u.call(r, http.MethodGet, "/v1/hosts/"+url.PathEscape(o.Host), nil)
	var h Host
	if !a.ok() || a.decode(&h) != nil || h.Online || h.Registry != "" {
		return ""
	}
	seen := "never seen"
	if h.LastSeen != nil {
		seen = "last seen " + h.LastSeen.UTC().Format("2006-01-02 15:04:05 UTC")
	}
	if o.Status == order.StatusRunning {
		return fmt.Sprintf("The worker of host %s is offline (%s): whether the order still runs is unknown until a worker of the host is back and settles it (it is then shown interrupted). Check the host.", o.Host, seen)
	}
	return fmt.Sprintf("No worker of host %s is online (%s): the order waits in the host's queue and runs when one is. Stop takes it off the queue.", o.Host, seen)
}

// events is GET /ui/orders/{id}/events: GET /v1/orders/{id}/events itself,
// served on this response. A browser's EventSource cannot send an
// Authorization header, so the session's credential is put on the
// request here; resumption (Last-Event-ID, or ?after= from a page that
// opens its stream again), the write-timeout exemption and the end at
// shutdown are the native handler's.
func (u *webUI) events(w http.ResponseWriter, r *http.Request) {
	// The stream ends with the session (signed out, gone idle, expired),
	// not only when the token stops working (the API's own check). An
	// open stream is not a person's activity: it does not keep the
	// session from going idle (docs/ui.md), so it looks now and then
	// whether the session went idle meanwhile.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	sess := sessionOf(r)
	go func() {
		tick := time.NewTicker(u.sessions.checkEvery)
		defer tick.Stop()
		for {
			select {
			case <-sess.out:
				cancel()
				return
			case <-tick.C:
				u.sessions.expire(sess)
			case <-ctx.Done():
				return
			}
		}
	}()
	// The run page reads only the finished order's status, then loads the
	// page afresh: its finished event comes without the outputs.
	req := u.request(r.WithContext(ctx), r.Method, orderPath(r)+"/events?outputs=none", nil) // GET, or HEAD
	if v := r.Header.Values("Last-Event-ID"); len(v) > 0 {
		req.Header["Last-Event-Id"] = v // all of them: two are refused there
	} else if v, ok := r.URL.Query()["after"]; ok {
		// A run page that follows again after its stream was lost opens a
		// new EventSource, which cannot send Last-Event-ID: it names the
		// last event it showed here instead, so the stream resumes after
		// it rather than replaying the output from its start. The
		// browser's own reconnects send the header, which is newer.
		req.Header["Last-Event-Id"] = v // refused there unless one event id
	}
	u.native.ServeHTTP(w, req)
	// A stream that ended with its session (signed out, expired, the
	// credential no longer valid) says so on the stream: the page would
	// otherwise retry, be sent to the sign-in page, and say only that
	// live output stopped.
	if r.Method != http.MethodGet || r.Context().Err() != nil || w.Header().Get("Content-Type") != "text/event-stream" {
		return
	}
	select {
	case <-sess.out:
	default:
		if _, err := u.s.Auth().Authenticate("Bearer " + sess.token); err == nil {
			return // the order's end, or the principal may no longer read it
		}
	}
	if _, err := io.WriteString(w, "event: session-ended\ndata: {}\n\n"); err == nil {
		_ = http.NewResponseController(w).Flush()
	}
}

// download is GET /ui/orders/{id}/output/{stream}: a stream's stored
// bytes as a file.
func (u *webUI) download(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "stream")
	if name != "stdout" && name != "stderr" {
		u.pages.errorPage(w, r, http.StatusNotFound, "No such output stream.")
		return
	}
	a := u.call(r, http.MethodGet, orderPath(r), nil)
	var o Order
	if !a.ok() || a.decode(&o) != nil {
		u.pages.errorPage(w, r, a.status, a.problem())
		return
	}
	if o.Result == nil {
		u.pages.errorPage(w, r, http.StatusConflict, "The order has no output yet.")
		return
	}
	s := o.Result.Stdout
	if name == "stderr" {
		s = o.Result.Stderr
	}
	enc := order.EncodeText
	if s.Encode != nil {
		e, err := order.ParseEncoding(*s.Encode)
		if err != nil {
			u.pages.errorPage(w, r, http.StatusBadGateway, "The output's encoding is unknown.")
			return
		}
		enc = e
	}
	b, err := order.Decode(s.Content, enc)
	if err != nil {
		u.pages.errorPage(w, r, http.StatusBadGateway, "The output could not be decoded.")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", `attachment; filename="order-`+o.ID.String()+`.`+name+`"`)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}

// cancel is POST /ui/orders/{id}/cancel: POST /v1/orders/{id}/cancel with
// SIGTERM, then back to the run page.
func (u *webUI) cancel(w http.ResponseWriter, r *http.Request) {
	a := u.call(r, http.MethodPost, orderPath(r)+"/cancel", map[string]string{"signal": "SIGTERM"})
	if !a.ok() {
		u.pages.errorPage(w, r, a.status, a.problem())
		return
	}
	http.Redirect(w, r, "/ui/orders/"+url.PathEscape(chi.URLParam(r, "id")), http.StatusSeeOther)
}

// historyFilter is the history page's filter form.
type historyFilter struct {
	Host, Status, Principal, Runbook, Action, Since, Until string
}

type historyView struct {
	F           historyFilter
	Statuses    []order.Status
	Orders      []Order
	HostNames   []string
	First, Next string
}

// history is GET /ui/history: GET /v1/orders with the form's filters (the
// dates as whole UTC days) and its keyset paging.
func (u *webUI) history(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := historyFilter{Host: q.Get("host"), Status: q.Get("status"), Principal: q.Get("principal"),
		Runbook: q.Get("runbook"), Action: q.Get("action"), Since: q.Get("since"), Until: q.Get("until")}
	v := historyView{F: f, Statuses: []order.Status{order.StatusQueued, order.StatusRunning, order.StatusSucceeded,
		order.StatusFailed, order.StatusTimedOut, order.StatusKilled, order.StatusCanceled, order.StatusInterrupted,
		order.StatusRejected, order.StatusExpired}, HostNames: u.hostNames(r)}

	api := url.Values{"limit": {"25"}}
	for k, val := range map[string]string{"host": f.Host, "status": f.Status, "principal": f.Principal,
		"runbook": f.Runbook, "action": f.Action, "cursor": q.Get("cursor")} {
		if val != "" {
			api.Set(k, val)
		}
	}
	for _, d := range []struct {
		name, val string
		add       time.Duration
	}{{"since", f.Since, 0}, {"until", f.Until, 24 * time.Hour}} {
		if d.val == "" {
			continue
		}
		t, err := time.Parse("2006-01-02", d.val)
		if err != nil {
			u.pages.render(w, r, http.StatusBadRequest, "history", pageData{Title: "History", Nav: "history",
				Error: "Dates are YYYY-MM-DD.", D: v})
			return
		}
		if t = t.Add(d.add); t.Year() > 9999 {
			continue // until 9999-12-31 inclusive: no bound the API can read
		}
		api.Set(d.name, t.UTC().Format(time.RFC3339))
	}
	a := u.call(r, http.MethodGet, "/v1/orders?"+api.Encode(), nil)
	var list OrderList
	if !a.ok() || a.decode(&list) != nil {
		u.pages.render(w, r, a.status, "history", pageData{Title: "History", Nav: "history", Error: a.problem(), D: v})
		return
	}
	v.Orders = list.Orders
	page := url.Values{}
	for k, val := range map[string]string{"host": f.Host, "status": f.Status, "principal": f.Principal,
		"runbook": f.Runbook, "action": f.Action, "since": f.Since, "until": f.Until} {
		if val != "" {
			page.Set(k, val)
		}
	}
	if q.Get("cursor") != "" {
		v.First = "/ui/history?" + page.Encode()
	}
	if list.NextCursor != nil {
		page.Set("cursor", *list.NextCursor)
		v.Next = "/ui/history?" + page.Encode()
	}
	u.pages.render(w, r, http.StatusOK, "history", pageData{Title: "History", Nav: "history", D: v})
}

// hosts is GET /ui/hosts: every host with its state, its queue depth, its
// running order and its queue, from three calls whatever the fleet's
// size: GET /v1/hosts and two listings (GET /v1/orders, scoped as the
// REST one) of the running and the queued orders the person may read,
// grouped by host here. One call per host made a page of fifty hosts
// fifty-one requests every 5 s, most of a principal's rate limit. The
// running orders are their own listing so that more than 1,000 queued
// ones (the newest are listed) never hide them.
func (u *webUI) hosts(w http.ResponseWriter, r *http.Request) {
	var hs struct {
		Hosts []Host `json:"hosts"`
	}
	a := u.call(r, http.MethodGet, "/v1/hosts", nil)
	if !a.ok() || a.decode(&hs) != nil {
		u.pages.render(w, r, a.status, "hosts", pageData{Title: "Hosts", Nav: "hosts", Error: a.problem(), D: hs})
		return
	}
	byHost := make(map[string]*Host, len(hs.Hosts))
	for i := range hs.Hosts {
		byHost[hs.Hosts[i].Host] = &hs.Hosts[i]
	}
	for _, st := range []order.Status{order.StatusRunning, order.StatusQueued} {
		var active OrderList
		b := u.call(r, http.MethodGet, "/v1/orders?limit=1000&status="+string(st), nil)
		if !b.ok() || b.decode(&active) != nil {
			u.pages.render(w, r, b.status, "hosts", pageData{Title: "Hosts", Nav: "hosts", Error: b.problem(), D: hs})
			return
		}
		// Newest first in the listing: the queue is shown in execution
		// order.
		for i := len(active.Orders) - 1; i >= 0; i-- {
			o := &active.Orders[i]
			switch h := byHost[o.Host]; {
			case h == nil:
			case st == order.StatusRunning:
				h.Running = o
			default:
				h.Queued = append(h.Queued, *o)
			}
		}
	}
	u.pages.render(w, r, http.StatusOK, "hosts", pageData{Title: "Hosts", Nav: "hosts", D: hs})
}
