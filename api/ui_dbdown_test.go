package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/orderly-run/orderly/internal/pgembed"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/migrations"
)

// ownPG is a PostgreSQL cluster of the test's own, which it can stop and
// start again without touching the cluster the other tests share.
type ownPG struct {
	t    *testing.T
	opts pgembed.Options
	srv  *pgembed.Server
}

func startOwnPG(t *testing.T) *ownPG {
	t.Helper()
	binDir, err := pgembed.FindBinaries()
	if err != nil {
		t.Fatal(err)
	}
	// Not under t.TempDir, which the postgres user cannot enter.
	dir, err := os.MkdirTemp("", "orderly-ui-pg-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := &ownPG{t: t, opts: pgembed.Options{Dir: dir, BinDir: binDir, Database: "orderly"}}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if p.srv != nil {
			_ = p.srv.Stop(ctx)
		}
		_ = os.RemoveAll(dir)
	})
	p.start()
	if _, err := migrations.Up(t.Context(), p.srv.DSN(), nil); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *ownPG) start() {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.t.Context(), 2*time.Minute)
	defer cancel()
	srv, err := pgembed.Start(ctx, p.opts)
	if err != nil {
		p.t.Fatal(err)
	}
	p.srv = srv
}

func (p *ownPG) stop() {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.t.Context(), time.Minute)
	defer cancel()
	if err := p.srv.Stop(ctx); err != nil {
		p.t.Fatal(err)
	}
}

// runPageWhileDown GETs the run page at loc with the session as the
// browser loads it, and as the page's own check asks for it (auto).
func (e *uiEnv) runPageWhileDown(sess *http.Cookie, loc string, auto bool) *httptest.ResponseRecorder {
	req := httptest.NewRequest("GET", loc, nil)
	req.AddCookie(sess)
	if auto {
		req.Header.Set("HX-Request", "true")
		req.Header.Set("X-Orderly-Refresh", "auto")
	}
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	return rec
}

// TestUIRunPageWhileTheDatabaseIsDown (no browser): a run page loaded
// while PostgreSQL is stopped answers 503 with the stable code
// unavailable and Retry-After, says that the database cannot be reached
// and that the page checks again every 5 s (data-retry, which ui.js
// follows); so does the page's own check. Once PostgreSQL is back, the
// same request is the run page. It was the generic error page ("database
// unavailable"), with nothing that asked again.
func TestUIRunPageWhileTheDatabaseIsDown(t *testing.T) {
	pg := startOwnPG(t)
	e := newUIEnvOn(t, pg.srv.DSN())
	sess, csrf := e.uiSession(t, "alice")
	loc := e.exec(t, sess, url.Values{"csrf": {csrf}, "host": {"web-9"}, "command": {"true"}})
	pg.stop()
	for _, auto := range []bool{false, true} {
		rec := e.runPageWhileDown(sess, loc, auto)
		page := rec.Body.String()
		for _, want := range []string{`data-code="unavailable"`, `data-retry="5000"`, `id="problem-code">unavailable<`,
			"The database cannot be reached, so the order cannot be shown now.", "This page checks again every 5 s"} {
			if !strings.Contains(page, want) {
				t.Errorf("auto %v: the run page with PostgreSQL stopped lacks %q:\n%s", auto, want, page)
			}
		}
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "5" {
			t.Errorf("auto %v: the run page with PostgreSQL stopped: %d, Retry-After %q; want 503, 5", auto, rec.Code, rec.Header().Get("Retry-After"))
		}
	}
	pg.start()
	testenv.WaitUntil(t, 60*time.Second, "the run page once PostgreSQL is back", func() bool {
		rec := e.runPageWhileDown(sess, loc, true)
		return rec.Code == http.StatusOK && strings.Contains(rec.Body.String(), `id="run"`)
	})
}

// TestUIRunPageComesBackWithTheDatabase: a run page opened in the
// browser while PostgreSQL is stopped says that the database cannot be
// reached; started again, the page shows the order by itself, through
// its check every 5 s. The generic error page stayed until reloaded by
// hand.
func TestUIRunPageComesBackWithTheDatabase(t *testing.T) {
	pg := startOwnPG(t)
	e := newUIEnvOn(t, pg.srv.DSN())
	sess, csrf := e.uiSession(t, "alice")
	loc := e.exec(t, sess, url.Values{"csrf": {csrf}, "host": {"web-9"}, "command": {"true"}})
	ctx := browser(t)
	signIn(t, ctx, e, "alice")
	pg.stop()
	step(t, ctx, "open the run page with PostgreSQL stopped", chromedp.Navigate(e.url+loc), chromedp.WaitVisible(chromedp.ID("retry-note")))
	if got := text(t, ctx, "#problem"); !strings.Contains(got, "The database cannot be reached") {
		t.Fatalf("the page says %q", got)
	}
	pg.start()
	waitJS(t, ctx, "the run page once PostgreSQL is back", `!!document.getElementById("run") && document.getElementById("status").innerText === "queued"`, 60*time.Second)
}
