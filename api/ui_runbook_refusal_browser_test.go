package api_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestUIRunbookRefusalStaysOnItsPage: a runbook run the API refuses (a
// host that is no host id) is said on the runbook's page, its host kept
// and its variables asked for again, not on an error page whose only
// link is the dashboard; run again from there, it runs.
func TestUIRunbookRefusalStaysOnItsPage(t *testing.T) {
	e := newUIEnv(t)
	ctx := browser(t)
	signIn(t, ctx, e, "alice")
	step(t, ctx, "open the runbook", chromedp.Navigate(e.url+"/ui/runbooks/Hello.md"), chromedp.WaitVisible(chromedp.ID("runbook-form")))
	step(t, ctx, "run it on a bad host", chromedp.SendKeys(chromedp.ID("rb-host"), "web 1"), chromedp.SendKeys(chromedp.ID("env-NAME"), "bob"),
		chromedp.Click(chromedp.ID("runbook-run")), chromedp.WaitVisible(chromedp.ID("confirm")), chromedp.Click(chromedp.ID("confirm-yes")))
	waitJS(t, ctx, "the refusal", `!!document.getElementById("error")`, 30*time.Second)
	if msg := text(t, ctx, "#error"); !strings.Contains(msg, "host") || !strings.Contains(msg, "nothing was run") {
		t.Fatalf("the refusal says %q", msg)
	}
	if !eval[bool](t, ctx, `!!document.getElementById("runbook-form") && !!document.getElementById("env-again")`) {
		t.Fatal("the refusal is not on the runbook's page, or does not ask for the variables again")
	}
	if host := eval[string](t, ctx, `document.getElementById("rb-host").value`); host != "web 1" {
		t.Fatalf("the host field holds %q, want the host the run named", host)
	}
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM orders WHERE runbook = 'Hello.md'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("runs of Hello.md after the refusal: %d (%v), want 0", n, err)
	}

	step(t, ctx, "run it again on web-1", chromedp.SetValue(chromedp.ID("rb-host"), "web-1"), chromedp.SendKeys(chromedp.ID("env-NAME"), "bob"),
		chromedp.Click(chromedp.ID("runbook-run")), chromedp.WaitVisible(chromedp.ID("confirm")), chromedp.Click(chromedp.ID("confirm-yes")))
	waitJS(t, ctx, "the run to finish", `!!document.getElementById("run") && document.getElementById("status").innerText === "succeeded" && !document.getElementById("run").dataset.events`, 30*time.Second)
	if out := text(t, ctx, "#output"); !strings.Contains(out, "hello from a runbook, bob") {
		t.Fatalf("output %q", out)
	}
}
