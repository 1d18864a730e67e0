package api_test

import (
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/orderly-run/orderly/internal/action"
	"github.com/orderly-run/orderly/internal/config"
)

// TestUIActionLimitSaysWhenInBrowser: in a real Chromium, a run refused
// by the action's `runs` per `per` says when the action may run again
// (in how many seconds and at what time), and one refused by its
// concurrent_per_host links to the order that holds the slot. No worker
// serves idle-* hosts: their runs stay queued.
func TestUIActionLimitSaysWhenInBrowser(t *testing.T) {
	e := newUIEnv(t)
	acts := uiActions()
	acts.Definitions = append(acts.Definitions,
		config.Action{Name: "once", Title: "Once an hour", Command: []string{"/bin/true"}, Roles: []string{"ops"},
			Hosts: []string{"idle-*"}, Timeout: 30 * time.Second, Limit: config.ActionLimit{Runs: 1, Per: time.Hour}},
		config.Action{Name: "solo", Title: "One at a time", Command: []string{"/bin/true"}, Roles: []string{"ops"},
			Hosts: []string{"idle-*"}, Timeout: 30 * time.Second, Limit: config.ActionLimit{ConcurrentPerHost: 1}})
	set, err := action.New(acts)
	if err != nil {
		t.Fatal(err)
	}
	e.actions.Store(set)
	ctx := browser(t)
	signIn(t, ctx, e, "alice")

	// run presses the action's Run on host, from a fresh dashboard.
	run := func(name, host, until string) {
		t.Helper()
		step(t, ctx, "run "+name+" on "+host, chromedp.Navigate(e.url+"/ui/"), chromedp.WaitVisible(chromedp.ID("host-"+name)),
			chromedp.SetValue(chromedp.ID("host-"+name), host), chromedp.Click(chromedp.ID("run-"+name)),
			chromedp.WaitVisible(chromedp.ID(until)))
	}

	run("once", "idle-1", "run")
	run("once", "idle-1", "error") // a known host now: the field is a choice of them
	msg := text(t, ctx, "#error")
	m := regexp.MustCompile(`may run again in (\d+) s \(at (\d\d:\d\d:\d\d) UTC\)`).FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("the refusal %q does not say when the action may run again", msg)
	}
	if n, _ := strconv.Atoi(m[1]); n < 3590 || n > 3600 {
		t.Errorf("may run again in %s s, want 3590..3600 (1 run per hour, the first just now)", m[1])
	}
	at, _ := time.Parse("15:04:05", m[2])
	want := time.Now().UTC().Add(time.Hour)
	off := (at.Hour()*3600+at.Minute()*60+at.Second()-(want.Hour()*3600+want.Minute()*60+want.Second())+86400+43200)%86400 - 43200
	if off < -120 || off > 120 {
		t.Errorf("may run again at %s, want about %s (an hour from now)", m[2], want.Format("15:04:05"))
	}

	run("solo", "idle-1", "run")
	holder := eval[string](t, ctx, `document.getElementById("run").dataset.order`)
	run("solo", "idle-1", "error-order")
	if msg := text(t, ctx, "#error"); !regexp.MustCompile(`order ` + holder + ` holds the slot`).MatchString(msg) {
		t.Errorf("the refusal %q does not name the order holding the slot, %s", msg, holder)
	}
	step(t, ctx, "follow the holder's link", chromedp.Click(chromedp.ID("error-order")), chromedp.WaitVisible(chromedp.ID("run")))
	if got := eval[string](t, ctx, `document.getElementById("run").dataset.order`); got != holder {
		t.Errorf("the link opened order %s, want the holder %s", got, holder)
	}
}
