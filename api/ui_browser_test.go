package api_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
)

// browser returns a tab for t in the package's one headless Chromium, in
// a browser context of its own (cookies, storage and cache start empty
// and are thrown away with the tab when t ends). Starting Chromium costs
// about 2.5 s of CPU, so the browser tests share one instead of starting
// one each; it is started again if it has died. Without Chromium the test
// cannot run, which fails under CI=true (scripts/ensure-chromium.sh
// installs it).
func browser(t *testing.T) context.Context {
	t.Helper()
	bctx, err := sharedBrowser.get()
	if errors.Is(err, errNoChromium) {
		if os.Getenv("CI") == "true" {
			t.Fatal("Chromium not found: install the Debian chromium package (scripts/ensure-chromium.sh)")
		}
		t.Skip("Chromium not found; install it to run the web UI tests")
	}
	if err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	ctx, cancel := chromedp.NewContext(bctx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // opens the tab
		t.Fatalf("open a tab: %v", err)
	}
	return ctx
}

var errNoChromium = errors.New("no Chromium found")

// sharedBrowser is the Chromium the package's browser tests share;
// TestMain stops it.
var sharedBrowser chromium

type chromium struct {
	mu     sync.Mutex
	ctx    context.Context // the browser's first tab, which keeps it open
	stop   func()
	tmpDir string
}

// get returns the running browser's context, starting it first if there
// is none or the last one died.
func (c *chromium) get() (context.Context, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx != nil && c.ctx.Err() == nil {
		return c.ctx, nil
	}
	c.stopLocked()
	var path string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		return nil, errNoChromium
	}
	dir, err := os.MkdirTemp("", "orderly-chromium-")
	if err != nil {
		return nil, err
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path), chromedp.UserDataDir(filepath.Join(dir, "profile")), chromedp.WindowSize(1280, 900),
		chromedp.Flag("headless", true), chromedp.Flag("no-sandbox", true), chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// Chromium's own temporary directory (its singleton socket), left
		// behind in /tmp otherwise: the browser is killed.
		chromedp.Env("TMPDIR=" + dir),
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	c.ctx, c.tmpDir = ctx, dir
	c.stop = func() { cancel(); acancel() }
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		c.stopLocked()
		return nil, err
	}
	return ctx, nil
}

// close stops the browser, if one runs, and removes its directory.
func (c *chromium) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopLocked()
}

func (c *chromium) stopLocked() {
	if c.stop != nil {
		c.stop()
	}
	if c.tmpDir != "" {
		os.RemoveAll(c.tmpDir)
	}
	c.ctx, c.stop, c.tmpDir = nil, nil, ""
}

// step runs browser actions with a deadline.
func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	stepWithin(t, ctx, what, 30*time.Second, actions...)
}

// stepWithin is step with the deadline d, for a step whose cost is the
// browser's CPU rather than a wait.
func stepWithin(t *testing.T, ctx context.Context, what string, d time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := chromedp.Do(c, actions...); err != nil {
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		t.Fatalf("%s: %v\nat %s:\n%s", what, err, loc, body)
	}
}

// text reads an element's text.
func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(c, chromedp.Text(chromedp.CSS(sel), chromedp.NodeVisible))
	if err != nil {
		t.Fatalf("read %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS waits until a JavaScript expression is true. It asks again
// every 50 ms, so a page that reloads meanwhile (a finished run) is
// simply asked again.
func waitJS(t *testing.T, ctx context.Context, what, expr string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		ok, err := chromedp.Run(c, chromedp.Evaluate[bool](expr))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
			t.Fatalf("waiting for %s: %v\n%s", what, err, body)
		}
		<-tick.C
	}
}

// screenshot saves the page as PNG under ORDERLY_UI_SCREENSHOTS (the
// README's pictures: ORDERLY_UI_SCREENSHOTS=$PWD/docs), or a temp dir.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("ORDERLY_UI_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	b, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// signIn signs in with a principal's token through the form. Its steps
// are the browser's work, not the server's (the sign-in handler compares
// a SHA-256 and keeps a session in memory): under a load average of 25 –
// 47 on two cores, Chromium took more than 30 s to type a token and load
// the dashboard while the server never saw the form (no "ui signed in"
// line, no refusal). So they get the browser's deadline of stepWithin,
// and the token is set in one call rather than typed key by key (one
// round trip to the renderer per character; typing it is
// TestUIPhoneKeyboardDarkMode's).
func signIn(t *testing.T, ctx context.Context, e *uiEnv, who string) {
	t.Helper()
	stepWithin(t, ctx, "open the sign-in page", 2*time.Minute, chromedp.Navigate(e.url+"/ui/"), chromedp.WaitVisible(chromedp.ID("token")))
	stepWithin(t, ctx, "sign in as "+who, 2*time.Minute,
		chromedp.SetValue(chromedp.ID("token"), e.tokens[who]),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("exec-form")))
	if got := text(t, ctx, "#who"); got != who {
		t.Fatalf("signed in as %q, want %q", got, who)
	}
}

// TestUIRunActionInBrowser drives the whole restart-button flow in a real
// headless Chromium: sign in, run an action with a parameter through its
// confirmation, watch its output arrive live, find it in the history,
// re-run it with the same parameter, sign out. The session cookie's
// flags are read from the browser.
func TestUIRunActionInBrowser(t *testing.T) {
	e := newUIEnv(t)
	ctx := browser(t)
	signIn(t, ctx, e, "alice")

	cookies, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{e.url + "/ui/"}})
	if err != nil {
		t.Fatal(err)
	}
	var session *network.Cookie
	for _, c := range cookies.Cookies {
		if c.Name == "orderly_session" {
			session = c
		}
	}
	if session == nil || !session.HTTPOnly || session.SameSite != network.CookieSameSiteStrict || session.Secure || session.Path != "/ui/" {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/ui/, not Secure over plain HTTP", session)
	}
	if got := eval[string](t, ctx, `document.cookie`); strings.Contains(got, "orderly_session") {
		t.Fatalf("the session cookie is readable by scripts: %q", got)
	}

	// The action's fields come with the host's choices (htmx).
	step(t, ctx, "see the action", chromedp.WaitVisible(chromedp.ID("action-greet")), chromedp.WaitVisible(chromedp.ID("p-greet-who")))
	waitJS(t, ctx, "restart's unit dropdown", `!!document.querySelector("select#p-restart-id option[value='0042']")`, 10*time.Second)
	screenshot(t, ctx, "ui-dashboard.png")

	run := func(who string) string {
		// The command holds each line until the test lets it go: the
		// second one printed after the page showed the first proves the
		// page follows the output live, however slow the machine is.
		release := holdGreet(t, who)
		step(t, ctx, "fill in who", chromedp.SetValue(chromedp.ID("p-greet-who"), who), chromedp.Click(chromedp.ID("run-greet")))
		step(t, ctx, "confirm", chromedp.WaitVisible(chromedp.ID("confirm")), chromedp.Click(chromedp.ID("confirm-yes")))
		step(t, ctx, "reach the run page", chromedp.WaitVisible(chromedp.ID("run")))
		waitJS(t, ctx, "the first line", `document.getElementById("output").innerText.includes("hello `+who+` 1")`, 30*time.Second)
		if out := eval[string](t, ctx, `document.getElementById("output").innerText`); strings.Contains(out, who+" 2") {
			t.Fatalf("a line the command was still holding shows: %q", out)
		}
		if st := text(t, ctx, "#status"); st != "running" {
			t.Fatalf("status while the first line shows: %q, want running", st)
		}
		release(1)
		waitJS(t, ctx, "the second line, on the page already open", `document.getElementById("output").innerText.includes("hello `+who+` 2")`, 30*time.Second)
		release(2)
		release(3)
		// The colour is a styled span, never markup from the output.
		if n := eval[int](t, ctx, `document.querySelectorAll("#output span.ansi-fg2").length`); n == 0 {
			t.Fatal("ANSI green was not rendered as a styled span")
		}
		waitJS(t, ctx, "the order to finish", `document.getElementById("status").innerText === "succeeded" && !document.getElementById("run").dataset.events && document.readyState === "complete"`, 30*time.Second)
		step(t, ctx, "finished page", chromedp.WaitVisible(chromedp.ID("exit-code")))
		if got := text(t, ctx, "#exit-code"); got != "0" {
			t.Fatalf("exit code %q", got)
		}
		if got := text(t, ctx, "#principal"); got != "alice" {
			t.Fatalf("run by %q", got)
		}
		// A time breaks between its words only: "09:02:15 U" over "TC"
		// was seen in a 1280-pixel window.
		if !eval[bool](t, ctx, `Array.from(document.querySelectorAll(".facts dd time")).every(e => {
			const n = e.firstChild, words = n.textContent.split(" "); let at = 0;
			return words.every(w => { const r = document.createRange(); r.setStart(n, at); r.setEnd(n, at + w.length); at += w.length + 1; return r.getClientRects().length <= 1; });
		})`) {
			t.Errorf("a time on the run page breaks inside a word: %q", eval[[]string](t, ctx, `Array.from(document.querySelectorAll(".facts dd time")).map(e => e.innerText)`))
		}
		if out := text(t, ctx, "#output"); !strings.Contains(out, "hello "+who+" 3") || strings.Contains(out, "\x1b") {
			t.Fatalf("final output %q", out)
		}
		release(0)
		return eval[string](t, ctx, `document.getElementById("run").dataset.order`)
	}
	first := run("world")
	screenshot(t, ctx, "ui-run.png")
	if link := eval[string](t, ctx, `document.getElementById("permalink").getAttribute("href")`); link != "/ui/orders/"+first {
		t.Fatalf("permalink %q", link)
	}

	// History lists it, and the status filter narrows it.
	step(t, ctx, "history", chromedp.Navigate(e.url+"/ui/history?status=succeeded"), chromedp.WaitVisible(chromedp.ID("results")))
	if n := eval[int](t, ctx, `document.querySelectorAll('#results a[href="/ui/orders/`+first+`"]').length`); n != 1 {
		t.Fatalf("history does not list order %s", first)
	}
	// Changing a filter swaps the results in place (htmx, under the
	// page's Content-Security-Policy) and puts the filter in the URL.
	eval[bool](t, ctx, `(function(){ const s = document.getElementById("f-status"); s.value = "failed"; s.dispatchEvent(new Event("change", {bubbles: true})); return true; })()`)
	waitJS(t, ctx, "the filtered results", `location.search.includes("status=failed") && document.querySelectorAll('#results a[href="/ui/orders/`+first+`"]').length === 0`, 10*time.Second)

	// Re-run: the same parameter, pre-filled.
	step(t, ctx, "open the run page", chromedp.Navigate(e.url+"/ui/orders/"+first), chromedp.Click(chromedp.ID("rerun")),
		chromedp.WaitVisible(chromedp.ID("p-greet-who")))
	waitJS(t, ctx, "the re-run's value", `document.getElementById("p-greet-who").value === "world"`, 10*time.Second)
	step(t, ctx, "run again", chromedp.Click(chromedp.ID("run-greet")))
	step(t, ctx, "confirm again", chromedp.WaitVisible(chromedp.ID("confirm")), chromedp.Click(chromedp.ID("confirm-yes")))
	waitJS(t, ctx, "the re-run to finish", `!!document.getElementById("run") && document.getElementById("run").dataset.order !== "`+first+`" && document.getElementById("status").innerText === "succeeded" && !document.getElementById("run").dataset.events`, 40*time.Second)

	// Sign out: the session is gone on the server too.
	step(t, ctx, "sign out", chromedp.Click(chromedp.ID("signout")), chromedp.WaitVisible(chromedp.ID("token")))
	req, _ := http.NewRequest("GET", e.url+"/ui/", nil)
	req.AddCookie(&http.Cookie{Name: "orderly_session", Value: session.Value})
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/ui/signin") {
		t.Fatalf("the signed-out session still works: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// TestUIViewerAndForgery: a principal without the action's role sees no
// button, and a form posted from another site, without or with a wrong
// anti-forgery token, runs nothing.
func TestUIViewerAndForgery(t *testing.T) {
	e := newUIEnv(t)
	ctx := browser(t)
	signIn(t, ctx, e, "carol")
	if n := eval[int](t, ctx, `document.querySelectorAll("#action-greet, #actions").length`); n != 0 {
		t.Fatal("carol, without the ops role, sees the greet action")
	}

	// A page on another site (localhost is not 127.0.0.1) posts a form to
	// the UI: SameSite=Strict keeps the session cookie off it.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte(`<form id="f" method="post" action="` + e.url + `/ui/exec">
<input name="host" value="web-1"><input name="command" value="touch"><input name="args" value="/tmp/forged">
</form><script>document.getElementById("f").submit()</script>`))
	}))
	defer evil.Close()
	evilURL := strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)
	step(t, ctx, "visit the forging page", chromedp.Navigate(evilURL))
	waitJS(t, ctx, "the forged post's answer", `location.pathname.startsWith("/ui/")`, 20*time.Second)
	if body := eval[string](t, ctx, `document.body.innerText`); !strings.Contains(body, "Sign in again") && !strings.Contains(body, "anti-forgery") {
		t.Fatalf("the forged post was not refused:\n%s", body)
	}

	// Carol's own cookie without, then with a wrong, anti-forgery token.
	cookies, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{e.url + "/ui/"}})
	if err != nil {
		t.Fatal(err)
	}
	var sid string
	for _, c := range cookies.Cookies {
		if c.Name == "orderly_session" {
			sid = c.Value
		}
	}
	for _, csrf := range []string{"", "wrong"} {
		form := "host=web-1&command=true"
		if csrf != "" {
			form += "&csrf=" + csrf
		}
		if code := postSession(t, e.url+"/ui/exec", form, sid); code != http.StatusForbidden {
			t.Fatalf("post with csrf %q: %d, want 403", csrf, code)
		}
	}
	// Running the action by its URL is refused by the API itself.
	step(t, ctx, "back to the dashboard", chromedp.Navigate(e.url+"/ui/"), chromedp.WaitVisible(chromedp.ID("exec-form")))
	csrf := eval[string](t, ctx, `document.body.dataset.csrf`)
	if code := postSession(t, e.url+"/ui/actions/greet/run", "host=web-1&p.who=x&csrf="+csrf, sid); code != http.StatusNotFound {
		t.Fatalf("carol running greet by URL: %d, want 404 (the API's answer)", code)
	}
	list, _, err := e.store.ListOrders(context.Background(), postgres.Filter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 0 {
		t.Fatalf("forged or refused posts created %d orders", len(list))
	}
}

// postSession POSTs the form-encoded form to target over HTTP with the
// session cookie sid, as a forged page would, and returns the status.
func postSession(t *testing.T, target, form, sid string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", target, strings.NewReader(form))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: "orderly_session", Value: sid})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestUIExecStopAndHugeOutput submits commands through the command form:
// a long one is stopped from its run page (cancel, after the
// confirmation), and a huge output is shown as head and tail with the
// whole kept output as a download.
func TestUIExecStopAndHugeOutput(t *testing.T) {
	e := newUIEnv(t)
	ctx := browser(t)
	signIn(t, ctx, e, "alice")

	exec := func(command, args string) {
		t.Helper()
		step(t, ctx, "open the command form", chromedp.Navigate(e.url+"/ui/"), chromedp.WaitVisible(chromedp.ID("exec-form")))
		step(t, ctx, "submit "+command,
			chromedp.SetValue(chromedp.ID("exec-host"), "web-1"), chromedp.SetValue(chromedp.ID("exec-command"), command),
			chromedp.SetValue(chromedp.ID("exec-args"), args), chromedp.Click(chromedp.ID("exec-run")))
		// Not WaitVisible: a run that ends at once reloads its page, and
		// a node query the reload cuts short waits out its deadline (seen
		// on a loaded machine with the huge output below).
		waitJS(t, ctx, "the run page of "+command, `!!document.getElementById("run")`, 60*time.Second)
	}

	exec("sh", "-c\necho started; exec sleep 60")
	waitJS(t, ctx, "the command to start", `document.getElementById("output").innerText.includes("started")`, 30*time.Second)
	step(t, ctx, "stop it", chromedp.Click(chromedp.ID("stop")), chromedp.WaitVisible(chromedp.ID("confirm")),
		chromedp.Click(chromedp.ID("confirm-yes")))
	waitJS(t, ctx, "the order to be killed", `document.getElementById("status").innerText === "killed" && !document.getElementById("run").dataset.events`, 30*time.Second)

	// A character whose bytes arrive in two chunks is shown whole while
	// the order runs (the page reloads with the stored output at the end).
	exec("sh", "-c\nprintf 'caf\\303'; sleep 1; printf '\\251!\\n'; exec sleep 60")
	waitJS(t, ctx, "the second chunk", `document.getElementById("output").innerText.includes("!")`, 30*time.Second)
	if live := text(t, ctx, "#output"); live != "café!" {
		t.Errorf("live output %q, want \"café!\"", live)
	}
	step(t, ctx, "stop it", chromedp.Click(chromedp.ID("stop")), chromedp.WaitVisible(chromedp.ID("confirm")),
		chromedp.Click(chromedp.ID("confirm-yes")))
	waitJS(t, ctx, "the order to be killed", `document.getElementById("status").innerText === "killed" && !document.getElementById("run").dataset.events`, 30*time.Second)

	// An escape sequence cut between two chunks, and one with private
	// parameters (hide the cursor), are dropped or coloured as the
	// stored output is, not shown as text ("?25l", "2m").
	exec("sh", "-c\nprintf '\\033[?25lA\\033[3'; sleep 1; printf '2mgreen\\033[0m!\\n'; exec sleep 60")
	waitJS(t, ctx, "the second chunk", `document.getElementById("output").innerText.includes("!")`, 30*time.Second)
	if live := text(t, ctx, "#output"); live != "Agreen!" {
		t.Errorf("live output %q, want \"Agreen!\"", live)
	}
	if got := eval[string](t, ctx, `Array.from(document.querySelectorAll("#output .ansi-fg2")).map(s => s.textContent).join("")`); got != "green" {
		t.Errorf("green text of the live output %q, want \"green\"", got)
	}
	step(t, ctx, "stop it", chromedp.Click(chromedp.ID("stop")), chromedp.WaitVisible(chromedp.ID("confirm")),
		chromedp.Click(chromedp.ID("confirm-yes")))
	waitJS(t, ctx, "the order to be killed", `document.getElementById("status").innerText === "killed" && !document.getElementById("run").dataset.events`, 30*time.Second)

	// A flood of output on a slow machine (the CPU throttled sixfold, as
	// a loaded CI machine's): the page keeps up and its Stop button
	// answers. Putting each 32 KiB chunk on the page laid the whole of
	// its text out again, minutes of work before the flood showed.
	if _, err := chromedp.Call(ctx, emulation.SetCPUThrottlingRate, emulation.SetCPUThrottlingRateParams{Rate: 6}); err != nil {
		t.Fatal(err)
	}
	exec("sh", "-c\nseq 1 200000; exec sleep 60")
	waitJS(t, ctx, "the flood to be shown", `!!document.querySelector("#output .omitted") && document.getElementById("output").innerText.startsWith("1\n2\n3\n") && document.getElementById("output").innerText.includes("\n200000\n")`, 30*time.Second)
	step(t, ctx, "stop it", chromedp.Click(chromedp.ID("stop")), chromedp.WaitVisible(chromedp.ID("confirm")),
		chromedp.Click(chromedp.ID("confirm-yes")))
	waitJS(t, ctx, "the order to be killed", `document.getElementById("status").innerText === "killed" && !document.getElementById("run").dataset.events`, 30*time.Second)
	if _, err := chromedp.Call(ctx, emulation.SetCPUThrottlingRate, emulation.SetCPUThrottlingRateParams{Rate: 1}); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the huge output's head and tail", `!!document.querySelector("#output .omitted")`, 30*time.Second)
	out := text(t, ctx, "#output")
	if !strings.HasPrefix(out, "1\n2\n3\n") || !strings.HasSuffix(out, "199999\n200000") || strings.Contains(out, "\n100000\n") {
		t.Fatalf("huge output is not head and tail: %d characters, starts %q", len(out), out[:min(len(out), 40)])
	}
	href := eval[string](t, ctx, `document.querySelector("#output .omitted a").getAttribute("href")`)
	cookies, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{e.url + "/ui/"}})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", e.url+href, nil)
	for _, c := range cookies.Cookies {
		req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Disposition"), "attachment") ||
		!bytes.HasPrefix(b, []byte("1\n2\n")) || len(b) < 100000 {
		t.Fatalf("download: %d %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Disposition"), len(b))
	}
}

// TestUIPhoneKeyboardDarkMode: on a phone-sized screen in dark mode the
// pages fit the width and are dark; sign-in and running a command work
// from the keyboard alone; the hosts page shows the worker online.
func TestUIPhoneKeyboardDarkMode(t *testing.T) {
	e := newUIEnv(t)
	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(3), chromedp.EmulateMobile, chromedp.EmulateTouch)); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}}); err != nil {
		t.Fatal(err)
	}
	// Keyboard only: the token field has the focus; Enter submits.
	step(t, ctx, "open the sign-in page", chromedp.Navigate(e.url+"/ui/"), chromedp.WaitVisible(chromedp.ID("token")))
	if id := eval[string](t, ctx, `document.activeElement.id`); id != "token" {
		t.Fatalf("focus on %q, want the token field", id)
	}
	step(t, ctx, "type the token and Enter", chromedp.KeyEvent(e.tokens["alice"]+kb.Enter), chromedp.WaitVisible(chromedp.ID("exec-form")))

	// A host in maintenance with the longest reason, one unbroken word of
	// it: who and why are read on the hosts page without a mouse (a
	// badge's title is not), and do not widen it.
	longWord := strings.Repeat("x", 200)
	if _, err := e.store.StartMaintenance(t.Context(), "ui-m2", new("disk swap "+longWord+" "+strings.Repeat("back at 14:00 ", 20)), "boss"); err != nil {
		t.Fatal(err)
	}
	// screen.width: a mobile layout viewport widens to fit what overflows.
	fits := `document.documentElement.scrollWidth <= screen.width + 1`
	dark := `(function(){ const m = getComputedStyle(document.body).backgroundColor.match(/\d+/g).map(Number); return m[0]+m[1]+m[2] < 150; })()`
	for _, page := range []string{"/ui/", "/ui/history", "/ui/runbooks/Hello.md", "/ui/hosts"} {
		step(t, ctx, "open "+page, chromedp.Navigate(e.url+page), chromedp.WaitVisible(chromedp.ID("main")))
		if !eval[bool](t, ctx, fits) {
			t.Errorf("%s is wider than the phone: %d > %d", page, eval[int](t, ctx, `document.documentElement.scrollWidth`), eval[int](t, ctx, `screen.width`))
		}
		if !eval[bool](t, ctx, dark) {
			t.Errorf("%s is not dark in dark mode: %s", page, eval[string](t, ctx, `getComputedStyle(document.body).backgroundColor`))
		}
	}
	waitJS(t, ctx, "web-1 online on the hosts page", `document.getElementById("hosts").innerText.includes("web-1") && document.getElementById("hosts").innerText.includes("online")`, 20*time.Second)
	if !eval[bool](t, ctx, `document.getElementById("hosts").innerText.includes("by boss since ") && document.getElementById("hosts").innerText.includes(": disk swap `+longWord+`")`) {
		t.Errorf("the hosts page on a phone does not show who put ui-m2 in maintenance and why:\n%s", eval[string](t, ctx, `document.getElementById("hosts").innerText`))
	}
	if !eval[bool](t, ctx, `document.querySelector("#hosts .maintenance").getBoundingClientRect().right <= screen.width + 1`) {
		t.Errorf("ui-m2's reason runs past the phone's screen: its right edge at %v, the screen %d wide",
			eval[float64](t, ctx, `document.querySelector("#hosts .maintenance").getBoundingClientRect().right`), eval[int](t, ctx, `screen.width`))
	}
	screenshot(t, ctx, "hosts-maintenance-phone.png")

	// The command form from the keyboard: its first field already holds
	// web-1, the one host online; Tab to the next, type, Enter to submit.
	step(t, ctx, "dashboard", chromedp.Navigate(e.url+"/ui/"), chromedp.WaitVisible(chromedp.ID("exec-host")))
	if host := eval[string](t, ctx, `document.getElementById("exec-host").value`); host != "web-1" {
		t.Fatalf("the command form's host starts as %q, want web-1, the one host online", host)
	}
	step(t, ctx, "type a command", chromedp.Focus(chromedp.ID("exec-host")), chromedp.KeyEvent(kb.Tab+"echo"+kb.Enter),
		chromedp.WaitVisible(chromedp.ID("run")))
	// The page reloads once the order finishes (the server renders the
	// result): the finished page has the exit code.
	waitJS(t, ctx, "echo to finish", `document.getElementById("status").innerText === "succeeded" && !document.getElementById("run").dataset.events && document.readyState === "complete"`, 30*time.Second)
	if !eval[bool](t, ctx, fits) {
		t.Error("the run page is wider than the phone")
	}
}

// TestUIRefusalsAreShown: an htmx request the API refuses (a filter it
// rejects) puts the API's message on the page instead of leaving the old
// results as if filtered; a refresh after the session ended goes to the
// sign-in page.
func TestUIRefusalsAreShown(t *testing.T) {
	e := newUIEnv(t)
	ctx := browser(t)
	signIn(t, ctx, e, "alice")
	step(t, ctx, "history", chromedp.Navigate(e.url+"/ui/history"), chromedp.WaitVisible(chromedp.ID("results")))
	eval[bool](t, ctx, `(function(){ const h = document.getElementById("f-host"); h.value = "a.b"; h.dispatchEvent(new Event("change", {bubbles: true})); return true; })()`)
	waitJS(t, ctx, "the refusal on the page", `!!document.getElementById("error") && document.getElementById("error").textContent.includes("host must be")`, 10*time.Second)

	step(t, ctx, "hosts", chromedp.Navigate(e.url+"/ui/hosts"), chromedp.WaitVisible(chromedp.ID("hosts")))
	eval[bool](t, ctx, `(function(){ fetch("/ui/signout", {method: "POST", headers: {"X-CSRF-Token": document.body.dataset.csrf}}); return true; })()`)
	waitJS(t, ctx, "the sign-in page after the session ended", `!!document.getElementById("token")`, 15*time.Second)
}

// TestUILiveOutputSaysTheSessionEnded: a run page following an order
// live when its session ends (signed out in another tab; expiry and a
// credential that stopped working end it the same way) stops its stream
// and says at once that the session ended, with a way to sign in again.
// It went on showing "running" with nothing said, then retried, was sent
// to the sign-in page and said only "Live output stopped; reload the
// page."
func TestUILiveOutputSaysTheSessionEnded(t *testing.T) {
	e := newUIEnv(t)
	ctx := browser(t)
	signIn(t, ctx, e, "alice")
	step(t, ctx, "run a command that ticks",
		chromedp.SetValue(chromedp.ID("exec-host"), "web-1"), chromedp.SetValue(chromedp.ID("exec-command"), "sh"),
		chromedp.SetValue(chromedp.ID("exec-args"), "-c\nfor i in $(seq 1 30); do echo tick $i; sleep 1; done"),
		chromedp.Click(chromedp.ID("exec-run")))
	waitJS(t, ctx, "live output", `!!document.getElementById("output") && document.getElementById("output").innerText.includes("tick 2")`, 20*time.Second)
	id := eval[string](t, ctx, `document.getElementById("run").dataset.order`)
	defer func() { // the order would tick on for half a minute
		sess, csrf := e.uiSession(t, "alice")
		e.postForm("/ui/orders/"+id+"/cancel", url.Values{"csrf": {csrf}}, sess)
	}()
	eval[bool](t, ctx, `(fetch("/ui/signout", {method: "POST", headers: {"X-CSRF-Token": document.body.dataset.csrf}}), true)`)
	// Before the browser's first retry (3 s): the stream itself said so.
	waitJS(t, ctx, "the page to say the session ended",
		`document.getElementById("output-note").textContent.includes("Your session has ended")`, 2500*time.Millisecond)
	if href := eval[string](t, ctx, `document.querySelector("#output-note a").getAttribute("href")`); href != "/ui/signin?next=%2Fui%2Forders%2F"+id {
		t.Fatalf("the note's link goes to %q", href)
	}
	shown := eval[string](t, ctx, `document.getElementById("output").innerText`)
	time.Sleep(2500 * time.Millisecond) // nothing to wait for: what must not come has 2.5 s to come
	if now := eval[string](t, ctx, `document.getElementById("output").innerText`); now != shown {
		t.Fatalf("output went on arriving after the session ended: %q, then %q", shown, now)
	}
}

// TestUILiveOutputFindsTheEnd: a run page whose stream is cut and whose
// reconnect is refused (here the principal's stream limit, held by
// another client; a proxy or a replica without the session alike) asks
// for the order's state and follows again, so the order's end, reached
// meanwhile, is shown. It went on saying "running" for an order that had
// ended, with only "Live output stopped; reload the page."
func TestUILiveOutputFindsTheEnd(t *testing.T) {
	e := newUIEnv(t)
	e.maxStreams.Store(1)
	gate := filepath.Join(t.TempDir(), "go")
	ctx := browser(t)
	signIn(t, ctx, e, "alice")
	step(t, ctx, "run a command that waits for the test",
		chromedp.SetValue(chromedp.ID("exec-host"), "web-1"), chromedp.SetValue(chromedp.ID("exec-command"), "sh"),
		chromedp.SetValue(chromedp.ID("exec-args"), "-c\necho started; while [ ! -e "+gate+" ]; do sleep 0.1; done; echo done"),
		chromedp.Click(chromedp.ID("exec-run")))
	waitJS(t, ctx, "live output", `!!document.getElementById("output") && document.getElementById("output").innerText.includes("started")`, 20*time.Second)
	id := eval[string](t, ctx, `document.getElementById("run").dataset.order`)
	defer func() { _ = os.WriteFile(gate, nil, 0o644) }()

	// The stream is cut; before the browser's retry (3 s) another client
	// of alice's holds her only stream, so the reconnect is refused.
	release := cutAndHoldTheStream(t, e, id)
	defer release()
	waitJS(t, ctx, "the page to see its reconnect refused",
		`document.getElementById("output-note").textContent.includes("following again")`, 15*time.Second)
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the order's end on the page", `document.readyState === "complete" && !!document.getElementById("status") && `+
		`document.getElementById("status").innerText === "succeeded" && document.getElementById("output").innerText.includes("done")`, 30*time.Second)
}

// TestUILiveOutputResumesAfterWhatItShowed: a run page whose reconnect
// was refused and that follows again resumes after the last event it
// showed: the output it has stays (a node of it is still the same node)
// and nothing is shown twice; what the command prints afterwards
// arrives. It replayed the stream from its start, rebuilding the whole
// output.
func TestUILiveOutputResumesAfterWhatItShowed(t *testing.T) {
	e := newUIEnv(t)
	e.maxStreams.Store(1)
	dir := t.TempDir()
	gate1, gate2 := filepath.Join(dir, "one"), filepath.Join(dir, "two")
	ctx := browser(t)
	signIn(t, ctx, e, "alice")
	step(t, ctx, "run a command that waits for the test",
		chromedp.SetValue(chromedp.ID("exec-host"), "web-1"), chromedp.SetValue(chromedp.ID("exec-command"), "sh"),
		chromedp.SetValue(chromedp.ID("exec-args"), "-c\necho started; while [ ! -e "+gate1+" ]; do sleep 0.1; done; echo middle; "+
			"while [ ! -e "+gate2+" ]; do sleep 0.1; done; echo done"),
		chromedp.Click(chromedp.ID("exec-run")))
	waitJS(t, ctx, "live output", `!!document.getElementById("output") && document.getElementById("output").innerText.includes("started")`, 20*time.Second)
	id := eval[string](t, ctx, `document.getElementById("run").dataset.order`)
	defer func() { _ = os.WriteFile(gate1, nil, 0o644); _ = os.WriteFile(gate2, nil, 0o644) }()
	// A mark on what the page shows now: a page that rebuilds its output
	// loses it.
	eval[bool](t, ctx, `(document.getElementById("output").firstElementChild.id = "resume-mark") !== ""`)

	// The stream is cut and the browser's own reconnect refused (another
	// client holds alice's only stream), so the page follows again on
	// its own once that client is gone.
	release := cutAndHoldTheStream(t, e, id)
	defer release()
	waitJS(t, ctx, "the page to see its reconnect refused",
		`document.getElementById("output-note").textContent.includes("following again")`, 15*time.Second)
	release()
	waitJS(t, ctx, "the page to follow again", `document.getElementById("output-note").textContent === ""`, 20*time.Second)
	if err := os.WriteFile(gate1, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "what the command printed since", `document.getElementById("output").innerText.includes("middle")`, 20*time.Second)
	if !eval[bool](t, ctx, `!!document.getElementById("resume-mark")`) {
		t.Error("the page rebuilt its output when it followed again")
	}
	if n := eval[float64](t, ctx, `document.getElementById("output").innerText.split("started").length - 1`); n != 1 {
		t.Errorf("the page shows %v times what it had shown before its stream was lost, want once:\n%s", n,
			eval[string](t, ctx, `document.getElementById("output").innerText`))
	}
}

// TestUIOutputShowsBidiControls: output that holds a bidi override
// ("abc" U+202E "fdp.exe", which a page shows as "abcexe.pdf") shows
// the control as its escape, live and once the order ended, as a
// terminal shows the text in the order it was printed; markup and
// terminal sequences in the same output stay text or are dropped.
func TestUIOutputShowsBidiControls(t *testing.T) {
	e := newUIEnv(t)
	ctx := browser(t)
	signIn(t, ctx, e, "alice")
	// The order is held open until the page has shown the output live:
	// with a sleep of 2 s instead, a page that loaded more slowly than that
	// under load saw the order already finished.
	gate := filepath.Join(t.TempDir(), "end")
	t.Cleanup(func() { _ = os.WriteFile(gate, nil, 0o644) })
	script := `printf 'abc\342\200\256fdp.exe\n<img src=x>\033]0;pwned\007\033]8;;http://x/\033\\link\033]8;;\033\\\n'; ` +
		`while [ ! -e ` + gate + ` ]; do sleep 0.05; done; echo end`
	step(t, ctx, "run a command that prints an override",
		chromedp.SetValue(chromedp.ID("exec-host"), "web-1"), chromedp.SetValue(chromedp.ID("exec-command"), "sh"),
		chromedp.SetValue(chromedp.ID("exec-args"), "-c\n"+script), chromedp.Click(chromedp.ID("exec-run")))
	const want = "abc\\u202efdp.exe\n<img src=x>link\n"
	check := func(when string) {
		t.Helper()
		got := eval[string](t, ctx, `document.getElementById("output").innerText`)
		if !strings.HasPrefix(got, want[:len(want)-1]) || strings.ContainsRune(got, 0x202e) {
			t.Fatalf("%s the output shows %q, want it to start %q", when, got, want)
		}
		if n := eval[int](t, ctx, `document.querySelectorAll("#output *:not(span)").length`); n != 0 || !strings.HasSuffix(eval[string](t, ctx, `document.title`), " · orderly") {
			t.Fatalf("%s the output made %d elements or set the title", when, n)
		}
	}
	waitJS(t, ctx, "the live output", `!!document.getElementById("output") && document.getElementById("output").innerText.includes("link")`, 20*time.Second)
	if st := text(t, ctx, "#status"); st != "running" {
		t.Fatalf("status %q: the output was not live", st)
	}
	check("live,")
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the order's end", `document.readyState === "complete" && !!document.getElementById("exit-code") && document.getElementById("exit-code").innerText === "0"`, 20*time.Second)
	check("ended,")
}

// TestUIPatternOnlyRE2Reads: a param whose pattern a browser reads
// otherwise than RE2 ([[:digit:]] is a class of ":digt" to JavaScript's v
// flag) still runs from its form. Before, the pattern attribute made the
// browser refuse "0042" and never send the form.
func TestUIPatternOnlyRE2Reads(t *testing.T) {
	e := newUIEnv(t)
	ctx := browser(t)
	signIn(t, ctx, e, "alice")
	step(t, ctx, "fill in n and run", chromedp.WaitVisible(chromedp.ID("p-tag-n")),
		chromedp.SetValue(chromedp.ID("p-tag-n"), "0042"), chromedp.Click(chromedp.ID("run-tag")))
	waitJS(t, ctx, "the run page", `!!document.getElementById("run")`, 10*time.Second)
	waitJS(t, ctx, "the run to finish", `document.getElementById("status").innerText === "succeeded" && !document.getElementById("run").dataset.events`, 30*time.Second)
	if out := text(t, ctx, "#output"); !strings.Contains(out, "tagged 0042") {
		t.Fatalf("output %q", out)
	}
}

// TestUIEmptyFieldRuns: a required param whose pattern allows "" runs
// from its form with the field left empty: the browser sends it (the
// field is not marked required) and the UI passes it on as "".
func TestUIEmptyFieldRuns(t *testing.T) {
	e := newUIEnv(t)
	ctx := browser(t)
	signIn(t, ctx, e, "alice")
	step(t, ctx, "run note with its fields left empty", chromedp.WaitVisible(chromedp.ID("p-note-text")),
		chromedp.Evaluate[chromedp.Void](`document.getElementById("p-note-tag").value = ""`), chromedp.Click(chromedp.ID("run-note")))
	waitJS(t, ctx, "the run page", `!!document.getElementById("run")`, 10*time.Second)
	waitJS(t, ctx, "the run to finish", `document.getElementById("status").innerText === "succeeded" && !document.getElementById("run").dataset.events`, 30*time.Second)
	if out := text(t, ctx, "#output"); !strings.Contains(out, "noted[] misc") {
		t.Fatalf("output %q", out)
	}
}

// TestUISecretStaysOutOfURLs: choosing another host reloads an action's
// fields with a GET (htmx), whose query carries the values already typed
// so they stay; a secret param's value must not ride along, whatever its
// field (a PIN, a choice, a checkbox): a URL is written to proxies'
// access logs, and to the rejections table when the request is refused,
// though the form may be sent with it later.
func TestUISecretStaysOutOfURLs(t *testing.T) {
	e := newUIEnv(t)
	ctx := browser(t)
	var mu sync.Mutex
	var urls []string
	if err := chromedp.Listen(ctx, func(ev any) {
		if r, ok := ev.(*network.EventRequestWillBeSent); ok {
			mu.Lock()
			urls = append(urls, r.Request.URL)
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	// reload chooses the action's host again and returns the URLs that
	// reloaded its fields.
	reload := func(action string) []string {
		t.Helper()
		eval[bool](t, ctx, `(document.getElementById("host-`+action+`").dispatchEvent(new Event("change", {bubbles: true})), true)`)
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			var choices []string
			for _, u := range urls {
				if strings.Contains(u, "/ui/actions/"+action+"/choices") {
					choices = append(choices, u)
				}
			}
			mu.Unlock()
			if len(choices) > 0 {
				return choices
			}
			if time.Now().After(deadline) {
				t.Fatalf("no request reloaded the fields of %s", action)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	signIn(t, ctx, e, "alice")
	step(t, ctx, "type a PIN",
		chromedp.SendKeys(chromedp.ID("p-unlock-pin"), "9731"),
		chromedp.SendKeys(chromedp.ID("p-unlock-door"), "back"))
	for _, u := range reload("unlock") {
		if strings.Contains(u, "9731") || !strings.Contains(u, "p.door=back") {
			t.Errorf("the fields' reload asked for %s: the PIN in the URL, or the door left out", u)
		}
	}
	step(t, ctx, "choose a secret room and tick a secret alarm",
		chromedp.SendKeys(chromedp.ID("p-vault-room"), "silver"), chromedp.Click(chromedp.ID("p-vault-alarm")))
	if !eval[bool](t, ctx, `document.getElementById("p-vault-room").value === "silver" && document.getElementById("p-vault-alarm").checked`) {
		t.Fatal("the vault's fields were not filled in")
	}
	for _, u := range reload("vault") {
		if strings.Contains(u, "silver") || strings.Contains(u, "p.room") || strings.Contains(u, "p.alarm") {
			t.Errorf("the fields' reload asked for %s: a secret in the URL", u)
		}
	}
}

// TestUISecretCheckboxStartsAsItsDefault: a secret bool param whose
// default is true shows ticked, on the dashboard, after its fields are
// reloaded for a host and in a re-run, and a run left as shown runs
// with true. Its checkbox started unticked (a secret's value is never
// shown, and its default was dropped with it), and an unticked box is
// sent as "false": a run from the page ran with false unless the person
// noticed and ticked it.
func TestUISecretCheckboxStartsAsItsDefault(t *testing.T) {
	e := newUIEnv(t)
	ctx := browser(t)
	signIn(t, ctx, e, "alice")
	ticked := func(where string) {
		t.Helper()
		waitJS(t, ctx, "vault's lock ticked "+where, `!!document.getElementById("p-vault-lock") && document.getElementById("p-vault-lock").checked`, 10*time.Second)
		if eval[bool](t, ctx, `document.getElementById("p-vault-alarm").checked`) {
			t.Fatalf("vault's alarm, default false, is ticked %s", where)
		}
	}
	ticked("on the dashboard")
	eval[bool](t, ctx, `(document.getElementById("p-vault-lock").dataset.before = "yes", document.getElementById("host-vault").dispatchEvent(new Event("change", {bubbles: true})), true)`)
	waitJS(t, ctx, "the vault's fields reloaded", `!!document.getElementById("p-vault-lock") && document.getElementById("p-vault-lock").dataset.before !== "yes"`, 10*time.Second)
	ticked("after its fields were reloaded")
	step(t, ctx, "run the vault as shown",
		chromedp.SendKeys(chromedp.ID("p-vault-room"), "gold"), chromedp.Click(chromedp.ID("run-vault")))
	waitJS(t, ctx, "the vault's run to finish", `!!document.getElementById("run") && document.getElementById("status").innerText === "succeeded" && !document.getElementById("run").dataset.events`, 30*time.Second)
	if out := text(t, ctx, "#output"); out != "vault gold false true" {
		t.Fatalf("the run as shown printed %q, want the lock's default true", out)
	}
	step(t, ctx, "re-run", chromedp.Click(chromedp.ID("rerun")), chromedp.WaitVisible(chromedp.ID("run-vault")))
	ticked("in the re-run form")
}

// TestUIBackThenRunAgain: the Back button from a run page shows the
// dashboard as a new page. Chromium restores even a no-store page from
// its back-forward cache (when it made no request of its own: dave's
// dashboard has no unit choices to ask for), with the form already
// confirmed and the idempotency key its run used: pressing the button
// again ran nothing, without asking, and showed the earlier run. After
// signing out, Back showed the signed-out session's page.
func TestUIBackThenRunAgain(t *testing.T) {
	e := newUIEnv(t)
	ctx := browser(t)
	signIn(t, ctx, e, "dave")
	// The page is driven by script: chromedp's view of the DOM does not
	// follow a page restored from that cache.
	press := func() {
		eval[bool](t, ctx, `(document.getElementById("p-greet-who").value = "again", document.getElementById("run-greet").click(), true)`)
		waitJS(t, ctx, "a confirmation or a run page", `document.getElementById("confirm").open || !!document.getElementById("run")`, 20*time.Second)
		if !eval[bool](t, ctx, `document.getElementById("confirm").open`) {
			t.Fatal("the action ran without asking for a confirmation")
		}
		eval[bool](t, ctx, `(document.getElementById("confirm-yes").click(), true)`)
		waitJS(t, ctx, "the run page", `!!document.getElementById("run")`, 20*time.Second)
	}
	eval[bool](t, ctx, `(window.leftHere = true)`)
	press()
	first := eval[string](t, ctx, `document.getElementById("run").dataset.order`)
	eval[bool](t, ctx, `(history.back(), true)`)
	waitJS(t, ctx, "the dashboard loaded afresh, not as it was left (its form confirmed, its key used)",
		`window.leftHere !== true && !!document.getElementById("run-greet") && document.readyState === "complete"`, 20*time.Second)
	press()
	if second := eval[string](t, ctx, `document.getElementById("run").dataset.order`); second == first {
		t.Fatalf("the run after Back is the first order again (%s): nothing ran", first)
	}

	// Back after signing out shows the sign-in page, not the page the
	// signed-out session left (on a shared computer, someone else's).
	eval[bool](t, ctx, `(location.assign("/ui/"), true)`)
	waitJS(t, ctx, "the dashboard", `!!document.getElementById("run-greet") && document.readyState === "complete"`, 20*time.Second)
	eval[bool](t, ctx, `(window.leftHere = true, document.getElementById("signout").click(), true)`)
	waitJS(t, ctx, "the sign-in page", `!!document.getElementById("token")`, 20*time.Second)
	eval[bool](t, ctx, `(history.back(), true)`)
	waitJS(t, ctx, "the sign-in page again, not the signed-out session's dashboard",
		`window.leftHere !== true && !!document.getElementById("token") && document.readyState === "complete"`, 20*time.Second)
}

// cutAndHoldTheStream cuts every client connection, then holds alice's
// only event stream of order id itself (retrying while the page's cut
// stream is released, which happens when its handler sees the cut), so
// that the page's reconnect is refused. release lets the stream go.
func cutAndHoldTheStream(t *testing.T, e *uiEnv, id string) (release func()) {
	t.Helper()
	e.srv.CloseClientConnections()
	held, cancel := context.WithCancel(context.Background())
	deadline := time.Now().Add(2 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for ; ; <-tick.C {
		req, _ := http.NewRequestWithContext(held, "GET", e.url+"/v1/orders/"+id+"/events", nil)
		req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusOK {
			return func() { cancel(); resp.Body.Close() }
		}
		resp.Body.Close()
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("the test's own stream: %d", resp.StatusCode)
		}
	}
}

// TestUIRunPageSaysTheHostIsOffline: pressing the button for a host whose
// worker is offline leads to a run page that says so (the order waits
// in the host's queue), not to a "queued" badge that waits without a
// word; once a worker of the host comes and starts the order, the note
// goes and the output arrives.
func TestUIRunPageSaysTheHostIsOffline(t *testing.T) {
	e := newUIEnv(t)
	gate := filepath.Join(t.TempDir(), "go")
	ctx := browser(t)
	signIn(t, ctx, e, "alice")
	step(t, ctx, "run a command on a host without a worker",
		chromedp.SetValue(chromedp.ID("exec-host"), "web-7"), chromedp.SetValue(chromedp.ID("exec-command"), "sh"),
		chromedp.SetValue(chromedp.ID("exec-args"), "-c\necho started; while [ ! -e "+gate+" ]; do sleep 0.1; done; echo done"),
		chromedp.Click(chromedp.ID("exec-run")))
	defer func() { _ = os.WriteFile(gate, nil, 0o644) }()
	waitJS(t, ctx, "the run page", `!!document.getElementById("run")`, 20*time.Second)
	if got := eval[string](t, ctx, `(document.getElementById("host-note") || {}).innerText || ""`); !strings.Contains(got, "No worker of host web-7 is online") {
		t.Fatalf("the run page of an order for an offline host says %q", got)
	}
	e.startWorker("web-7")
	waitJS(t, ctx, "the order to start", `document.getElementById("output").innerText.includes("started")`, 20*time.Second)
	if !eval[bool](t, ctx, `document.getElementById("host-note").hidden`) {
		t.Fatalf("the page still says the host is offline once its order runs")
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the order's end on the page", `document.readyState === "complete" && !!document.getElementById("status") && `+
		`document.getElementById("status").innerText === "succeeded" && document.getElementById("output").innerText.includes("done")`, 30*time.Second)
}

// TestUIRunPageSaysTheWorkerWentOffline: a run page following an order
// whose worker is lost (killed, its machine gone: no event comes, the
// stream stays open) says, within a few checks, that the host's worker is
// offline and what that means. It went on saying "running" without a
// word. The lost worker is a heartbeat that stops and an order marked
// running by it, so the moment it goes is the test's.
func TestUIRunPageSaysTheWorkerWentOffline(t *testing.T) {
	e := newUIEnv(t)
	sess, csrf := e.uiSession(t, "alice")
	loc := e.exec(t, sess, url.Values{"csrf": {csrf}, "host": {"web-8"}, "command": {"true"}})
	id := strings.TrimPrefix(loc, "/ui/orders/")
	beat := func() {
		now := time.Now()
		if err := e.q.Heartbeat(t.Context(), queue.HostInfo{Host: "web-8", Instance: "lost", Version: "test", StartedAt: now, LastSeen: now}); err != nil {
			t.Error(err)
		}
	}
	beat()
	stop, beating := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(beating)
		for tick := time.NewTicker(200 * time.Millisecond); ; {
			select {
			case <-stop:
				return
			case <-tick.C:
				beat()
			}
		}
	}()
	if _, err := e.pool.Exec(t.Context(), `UPDATE orders SET status = 'running', attempt = 1, started_at = now(), worker = 'lost' WHERE id::text = $1`, id); err != nil {
		t.Fatal(err)
	}
	ctx := browser(t)
	signIn(t, ctx, e, "alice")
	step(t, ctx, "open the run page", chromedp.Navigate(e.url+loc), chromedp.WaitVisible(chromedp.ID("status")))
	if got := text(t, ctx, "#status"); got != "running" {
		t.Fatalf("status %q, want running", got)
	}
	if !eval[bool](t, ctx, `document.getElementById("host-note").hidden`) {
		t.Fatalf("the page says the host is offline while its worker beats: %q", eval[string](t, ctx, `document.getElementById("host-note").textContent`))
	}
	close(stop)
	<-beating
	waitJS(t, ctx, "the page to say the worker is offline",
		`document.getElementById("host-note").innerText.includes("The worker of host web-8 is offline")`, 30*time.Second)
}
