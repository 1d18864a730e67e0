package api_test

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestUIPatternRefusalSaysTheRule: a value its param's pattern refuses is
// stopped by the browser before the form is sent, and the browser's
// message names the rule (as the API's refusal does) instead of its own
// "Please match the requested format.", which says nothing of what the
// field takes. Once the value is edited to one the rule takes, the form
// goes on to its confirmation.
func TestUIPatternRefusalSaysTheRule(t *testing.T) {
	e := newUIEnv(t)
	ctx := browser(t)
	signIn(t, ctx, e, "alice")
	step(t, ctx, "type a value greet's pattern refuses and press Run", chromedp.WaitVisible(chromedp.ID("p-greet-who")),
		chromedp.SendKeys(chromedp.ID("p-greet-who"), "World"), chromedp.Click(chromedp.ID("run-greet")))
	if open := eval[bool](t, ctx, `document.getElementById("confirm").open`); open {
		t.Fatal("a value the pattern refuses went on to the confirmation")
	}
	const want = "Who: the whole value must match ^[a-z]+$"
	if got := eval[string](t, ctx, `document.getElementById("p-greet-who").validationMessage`); got != want {
		t.Fatalf("the browser says %q, want %q", got, want)
	}
	if path := eval[string](t, ctx, `location.pathname`); path != "/ui/" {
		t.Fatalf("the form was sent: the page is %s", path)
	}

	step(t, ctx, "type a value the pattern takes and press Run", chromedp.SetValue(chromedp.ID("p-greet-who"), "w"),
		chromedp.SendKeys(chromedp.ID("p-greet-who"), "orld"), chromedp.Click(chromedp.ID("run-greet")))
	waitJS(t, ctx, "the confirmation", `document.getElementById("confirm").open`, 10*time.Second)
	if got := eval[string](t, ctx, `document.getElementById("p-greet-who").validationMessage`); got != "" {
		t.Fatalf("the corrected value is still refused: %q", got)
	}
}

// TestUIConfirmationNamesWhatRuns: the confirmation of an action says
// where it runs and with which values, the unit picked from the host's
// units included ("Run Restart an instance?" alone says neither), and
// Cancel runs nothing.
func TestUIConfirmationNamesWhatRuns(t *testing.T) {
	e := newUIEnv(t)
	ctx := browser(t)
	signIn(t, ctx, e, "alice")
	waitJS(t, ctx, "restart's unit dropdown", `!!document.querySelector("select#p-restart-id option[value='0042']")`, 10*time.Second)
	step(t, ctx, "pick 0042 and press Restart", chromedp.SetValue(chromedp.ID("p-restart-id"), "0042"),
		chromedp.Click(chromedp.ID("run-restart")))
	waitJS(t, ctx, "the confirmation", `document.getElementById("confirm").open`, 10*time.Second)
	values := text(t, ctx, "#confirm-values")
	for _, want := range []string{"Host", "web-1", "id", "0042 (active, running)"} {
		if !strings.Contains(values, want) {
			t.Fatalf("the confirmation does not name %q:\n%s", want, values)
		}
	}
	step(t, ctx, "cancel", chromedp.Click(chromedp.ID("confirm-no")))
	waitJS(t, ctx, "the dialog to close", `!document.getElementById("confirm").open`, 10*time.Second)
	if path := eval[string](t, ctx, `location.pathname`); path != "/ui/" {
		t.Fatalf("Cancel ran the action: the page is %s", path)
	}

	// Another action's confirmation names its own values, not the last
	// one's.
	step(t, ctx, "fill in who and press Greet", chromedp.SetValue(chromedp.ID("p-greet-who"), "world"),
		chromedp.Click(chromedp.ID("run-greet")))
	waitJS(t, ctx, "the confirmation", `document.getElementById("confirm").open`, 10*time.Second)
	values = text(t, ctx, "#confirm-values")
	if !strings.Contains(values, "Who") || !strings.Contains(values, "world") || strings.Contains(values, "0042") {
		t.Fatalf("greet's confirmation:\n%s", values)
	}
	step(t, ctx, "confirm", chromedp.Click(chromedp.ID("confirm-yes")))
	// Asked in one expression: the page reloads itself as the run ends.
	waitJS(t, ctx, "the run page of who=world", `!!document.getElementById("run") && document.querySelector("#run h1").innerText.includes("who=world")`, 30*time.Second)
}
