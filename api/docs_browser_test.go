package api_test

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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

	step(t, ctx, "open the explorer", chromedp.Navigate(hs.URL+"/docs"), chromedp.WaitVisible(chromedp.CSS(".information-container .title")))
	if title := text(t, ctx, ".information-container .title"); !strings.HasPrefix(title, "orderly API") {
		t.Fatalf("explorer title %q", title)
	}
	waitJS(t, ctx, "the operations", `document.querySelectorAll(".opblock").length > 20`, 30*time.Second)
	for _, op := range []string{"submitOrder", "orderEvents", "cancelOrder", "listHosts"} {
		if !eval[bool](t, ctx, `document.querySelector('[id$="`+op+`"]') !== null`) {
			t.Errorf("operation %s is not shown", op)
		}
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
