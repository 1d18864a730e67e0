package api

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"maps"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/orderly-run/orderly/internal/order"
)

// uiFiles are the UI's templates and static files (htmx 2.0.11, vendored
// from npm htmx.org@2.0.11, unmodified; its licence beside it), built into
// the binary: no build step, nothing from a CDN.
//
//go:embed web/ui/templates/*.html web/ui/static/*
var uiFiles embed.FS

// uiStatic serves /ui/static/.
func uiStatic() http.Handler {
	sub, err := fs.Sub(uiFiles, "web/ui/static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	fsrv := http.FileServer(http.FS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // files only, no listing
			return
		}
		if !fs.ValidPath(strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")) {
			// Not a name any embedded file has (invalid UTF-8): fs.Sub
			// refuses it with fs.ErrInvalid, which http.FileServer
			// answers 500, as if the server had failed.
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=300")
		fsrv.ServeHTTP(w, r)
	})
}

// uiPages are the parsed page templates, each with the layout.
type uiPages struct {
	byName map[string]*template.Template
}

// uiFuncs are the functions the page templates use.
func uiFuncs() template.FuncMap {
	return template.FuncMap{
		"short": func(id any) string {
			s := fmt.Sprint(id)
			if len(s) > 8 {
				return s[len(s)-8:] // UUIDv7: the tail is the random part
			}
			return s
		},
		"what":    orderTitle,
		"rfc3339": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"when":    func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
		"join":    strings.Join,
		// A runbook's file name as one path segment: '#', '?' and '%'
		// are valid in a name, and must not end or change the path.
		"segment": url.PathEscape,
		// Text shown in the order it is run or was written: escaped,
		// with bidi controls as escapes (a runbook's script: what the
		// person reads before running it is what runs).
		"shown": func(s string) template.HTML {
			var b strings.Builder
			writeText(&b, s)
			return template.HTML(b.String()) //nolint:gosec // escaped by writeText
		},
		"plain": bidiEscaped, // the same, for an attribute
	}
}

// orderTitle is how an order is named on a page: its runbook, or its
// command line, with every word that holds something that does not print
// (a line break, a bidi override such as U+202E, which reorders what
// follows it) written as a Go string literal, so a command shows as what
// it runs, as the CLI shows it.
func orderTitle(o Order) string {
	word := func(a string) string {
		if a == "" || strings.ContainsAny(a, " '\"") || strings.ContainsFunc(a, func(r rune) bool { return !unicode.IsPrint(r) }) {
			return fmt.Sprintf("%q", a)
		}
		return a
	}
	if o.Runbook != "" {
		if strings.ContainsFunc(o.Runbook, func(r rune) bool { return !unicode.IsPrint(r) }) {
			return fmt.Sprintf("runbook %q", o.Runbook) // a file name may hold a bidi override too
		}
		return "runbook " + o.Runbook
	}
	if a := o.Action; a != nil {
		s := "action " + a.Name
		for _, k := range slices.Sorted(maps.Keys(a.Params)) {
			s += " " + k + "=" + word(a.Params[k])
		}
		for _, k := range a.SecretParams {
			s += " " + k + "=•••"
		}
		return s
	}
	s := word(o.Command)
	for _, a := range o.Args {
		s += " " + word(a)
	}
	if len(s) > 200 {
		cut := 200
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut-- // not inside a character
		}
		s = s[:cut] + "…"
	}
	return s
}

func mustParsePages() *uiPages {
	p := &uiPages{byName: map[string]*template.Template{}}
	for _, name := range []string{"signin", "error", "dashboard", "run", "history", "hosts", "runbook"} {
		// dashboard.html holds the shared "orders" and "param" blocks; a
		// page parsed after it replaces its "content".
		t := template.Must(template.New(name).Funcs(uiFuncs()).ParseFS(uiFiles,
			"web/ui/templates/layout.html", "web/ui/templates/dashboard.html"))
		if name != "dashboard" {
			t = template.Must(t.ParseFS(uiFiles, "web/ui/templates/"+name+".html"))
		}
		p.byName[name] = t
	}
	return p
}

// pageData is what every page template gets.
type pageData struct {
	Title     string
	Principal string
	CSRF      string
	Nav       string
	Error     string
	// ErrorOrder is an order the error names, linked after it: the run
	// holding an action's concurrent_per_host slot.
	ErrorOrder string
	D          any
}

// render writes page name with status.
func (p *uiPages) render(w http.ResponseWriter, r *http.Request, status int, name string, d pageData) {
	if sess := sessionOf(r); sess != nil {
		d.Principal, d.CSRF = sess.principal, sess.csrf
	}
	var buf bytes.Buffer
	if err := p.byName[name].ExecuteTemplate(&buf, "layout", d); err != nil {
		http.Error(w, "page failed to render", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

type errorView struct {
	Status     int
	StatusText string
	Message    string
	// Code is the API's stable error code, when the page shows it.
	Code order.Code
	// Retry, when not zero, is how often the page asks for itself again
	// (ui.js), to show itself once it answers.
	Retry time.Duration
}

// errorPage shows a refusal or failure as a page with its status.
func (p *uiPages) errorPage(w http.ResponseWriter, r *http.Request, status int, msg string) {
	p.render(w, r, status, "error", pageData{Title: http.StatusText(status),
		D: errorView{Status: status, StatusText: http.StatusText(status), Message: msg}})
}

// uiRetryEvery is how often a page that could not be shown for a
// database out of reach asks for itself again: the run page's own check
// of its order (ui.js) and the hosts page's refresh go at that pace.
const uiRetryEvery = 5 * time.Second

// unreachablePage is a page that cannot be shown while PostgreSQL cannot
// be reached: a 503 with the stable code unavailable, which says so and
// asks for the page again every uiRetryEvery, showing it once it
// answers. what names what the page would show.
func (p *uiPages) unreachablePage(w http.ResponseWriter, r *http.Request, what string) {
	w.Header().Set("Retry-After", strconv.Itoa(int(uiRetryEvery/time.Second)))
	p.render(w, r, http.StatusServiceUnavailable, "error", pageData{Title: "Database unreachable",
		D: errorView{Status: http.StatusServiceUnavailable, StatusText: http.StatusText(http.StatusServiceUnavailable),
			Message: "The database cannot be reached, so " + what + " cannot be shown now.",
			Code:    order.CodeUnavailable, Retry: uiRetryEvery}})
}

// outPart is one stream's output as a run page shows it.
type outPart struct {
	Stream  string
	HTML    template.HTML // all of it, or its head when Omitted > 0
	Tail    template.HTML
	Omitted int // bytes between the head and the tail not shown
}

// uiShowBytes is how much of a stream a page renders: its head and tail,
// half each; the rest is a download.
const uiShowBytes = 64 << 10

// outputView renders a stored stream as head and tail, escaped with ANSI
// colours; binary content is a download only.
func outputView(name string, s Stream) (outPart, bool) {
	if s.Encode != nil || s.Content == "" {
		return outPart{}, false
	}
	text := s.Content
	part := outPart{Stream: name}
	if len(text) > uiShowBytes {
		head, tail := cutRunes(text[:uiShowBytes/2], false), cutRunes(text[len(text)-uiShowBytes/2:], true)
		part.Omitted = len(text) - len(head) - len(tail)
		part.HTML, part.Tail = ansiHTML(head), ansiHTML(tail)
		return part, true
	}
	part.HTML = ansiHTML(text)
	return part, true
}

// cutRunes trims a partial UTF-8 sequence from the end (or, with front,
// the start) of s.
func cutRunes(s string, front bool) string {
	if front {
		for len(s) > 0 && !utf8.RuneStart(s[0]) {
			s = s[1:]
		}
		return s
	}
	for len(s) > 0 {
		r, size := utf8.DecodeLastRuneInString(s)
		if r != utf8.RuneError || size > 1 {
			break
		}
		s = s[:len(s)-1]
	}
	return s
}

// runView is the run page's data.
type runView struct {
	O        Order
	Terminal bool
	Out      []outPart
	Notes    []string
	// HostNote says that no worker of the host of an order not yet
	// ended is online (hostNote).
	HostNote  string
	Downloads []string
	Rerun     string
	// Job is set for a run of an action with a systemd verb: once it
	// runs, it is systemd's job, which a cancel does not stop
	// (docs/actions.md), so the page offers no Stop then.
	Job bool
	// Duration is how long it ran: "–" for an order that has not ended
	// or never started (canceled or expired while queued, rejected by the
	// worker's host policy), "unknown" for
	// one interrupted, whose worker was lost and recorded no duration
	// (its output is what reached the live stream before).
	Duration string
}

func newRunView(o Order) runView {
	v := runView{O: o, Terminal: o.Status.Terminal(), Duration: "–"}
	switch {
	case o.Result == nil || o.StartedAt == nil || o.Status == order.StatusRejected:
		// Never ran: refused by the worker's host policy, which claims
		// the order and starts nothing, or ended while queued.
	case o.Status == order.StatusInterrupted:
		v.Duration = "unknown"
		// Its successor stored what reached the live stream before the
		// worker was lost: shown below, and not to be read as the whole.
		if o.Result.Stdout.Bytes == 0 && o.Result.Stderr.Bytes == 0 {
			v.Notes = append(v.Notes, "Its worker was lost while it ran: none of its output was kept.")
		} else {
			v.Notes = append(v.Notes, "Its worker was lost while it ran: only what it printed before that was kept, not what came after.")
		}
	default:
		v.Duration = (time.Duration(o.Result.DurationMS) * time.Millisecond).String()
	}
	if o.Result != nil {
		for _, st := range []struct {
			name string
			s    Stream
		}{{"stdout", o.Result.Stdout}, {"stderr", o.Result.Stderr}} {
			if st.s.Bytes > 0 {
				v.Downloads = append(v.Downloads, st.name)
			}
			if p, ok := outputView(st.name, st.s); ok {
				if p.Omitted > 0 {
					v.Notes = append(v.Notes, fmt.Sprintf("%s: %d bytes, the page shows the first and last %d KiB.", st.name, len(st.s.Content), uiShowBytes/2>>10))
				}
				v.Out = append(v.Out, p)
			} else if st.s.Encode != nil {
				v.Notes = append(v.Notes, fmt.Sprintf("%s is binary (%d bytes): download it.", st.name, st.s.Bytes))
			}
			if st.s.Truncated {
				v.Notes = append(v.Notes, fmt.Sprintf("%s was %d bytes; the worker kept its head and tail.", st.name, st.s.Bytes))
			}
		}
	}
	switch {
	case o.Action != nil:
		v.Rerun = "/ui/?rerun=" + o.ID.String() + "#action-" + o.Action.Name
	case o.Kind == "exec" || o.Kind == "":
		v.Rerun = "/ui/?rerun=" + o.ID.String() + "#exec"
	}
	if o.Runbook != "" {
		v.Rerun = "/ui/runbooks/" + url.PathEscape(o.Runbook)
	}
	return v
}
