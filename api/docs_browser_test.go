package api_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestDocsExplorerInBrowser opens /docs/ in a real browser: the explorer
// renders openapi.yaml with its operations, and every file the page loads
// comes from this server (nothing from a CDN).
func TestDocsExplorerInBrowser(t *testing.T) {
	srv := api.New(api.Deps{Logger: testenv.Logger(t), Settings: func() api.Settings { return api.Settings{} }})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	ctx := browser(t)
	// Whatever the page's Content-Security-Policy refuses is recorded.
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `window.refused = []; document.addEventListener("securitypolicyviolation", e => window.refused.push(e.violatedDirective + " " + e.blockedURI))`,
	}); err != nil {
		t.Fatal(err)
	}

	// Chromium starts, loads the explorer's bundle and renders the whole
	// spec: the test costs 10.5 s of CPU (its process tree's, counted in
	// a cgroup of its own), most of it in this step, which on two cores
	// shared at a load average of 20 outlasted step's 30 s in 3 of 6
	// runs. The deadline only catches a page that never renders.
	stepWithin(t, ctx, "open the explorer", 2*time.Minute, chromedp.Navigate(hs.URL+"/docs"),
		chromedp.WaitVisible(chromedp.CSS(".information-container .title")))
	if title := text(t, ctx, ".information-container .title"); !strings.HasPrefix(title, "orderly API") {
		t.Fatalf("explorer title %q", title)
	}
	waitJS(t, ctx, "the operations", `document.querySelectorAll(".opblock").length > 20`, 30*time.Second)
	for _, op := range []string{"submitOrder", "orderEvents", "cancelOrder", "listHosts"} {
		if !eval[bool](t, ctx, `document.querySelector('[id$="`+op+`"]') !== null`) {
			t.Errorf("operation %s is not shown", op)
		}
	}
	// The page takes a token (Authorize): it runs only this server's
	// scripts and talks only to it.
	resp, err := http.Get(hs.URL + "/docs/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self';") || !strings.Contains(csp, "connect-src 'self';") ||
		!strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("the explorer's Content-Security-Policy is %q", csp)
	}
	if refused := eval[[]string](t, ctx, `window.refused`); len(refused) > 0 {
		t.Errorf("the explorer's policy refused what it needs: %v", refused)
	}
	loaded := eval[[]string](t, ctx, `performance.getEntriesByType("resource").map(e => e.name)`)
	if len(loaded) < 3 {
		t.Fatalf("the page loaded only %v", loaded)
	}
	for _, u := range append(loaded, eval[string](t, ctx, `location.href`)) {
		if !strings.HasPrefix(u, hs.URL+"/") {
			t.Errorf("the explorer loaded %s, not from this server", u)
		}
	}
}
