package api_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/orderly-run/orderly/internal/testenv"
)

// jobManagerEnv marks the test process that runs inside the private mount
// namespace, beside a real systemd user manager.
const jobManagerEnv = "ORDERLY_UI_USER_MANAGER"

// jobManager is testenv.UserManagerScript's user manager with
// example@.service, whose start waits for the file gate-<instance> in
// $HOME: a restart of it is a job that runs until the test opens the
// gate.
var jobManager = testenv.UserManagerScript(`printf '[Unit]\nDescription=orderly UI test %%i\n[Service]\nExecStartPre=/bin/sh -c "while [ ! -e %%h/gate-%%i ]; do sleep 0.1; done"\nExecStart=/bin/sleep infinity\n' \
	> "$HOME/.config/systemd/user/example@.service"`)

// TestUIRunPageOffersNoStopForARunningJob: the run page of an action
// with a systemd verb offers Stop while the order is queued (a cancel
// then takes it off the queue), and once it runs, as it starts on the
// open page and when the page is loaded afresh, no Stop but a note that
// systemd's job runs to its end: a cancel is not applied to a running
// job (docs/actions.md), and the Stop the page offered was recorded as
// asked while the job went on to succeed. The job is real, on a systemd
// user manager in a private mount namespace, held by its unit until the
// test opens a gate.
func TestUIRunPageOffersNoStopForARunningJob(t *testing.T) {
	if os.Getenv(jobManagerEnv) != "1" {
		testenv.NeedRootTools(t, "a systemd user manager", "scripts/ensure-dbus.sh",
			"unshare", "dbus-daemon", "systemctl", "/lib/systemd/systemd")
		testenv.RerunInMountNamespace(t, jobManager, nil, t.Name(), jobManagerEnv)
		return
	}
	uiActionsBus = "user"
	t.Cleanup(func() { uiActionsBus = "system" })
	gate := filepath.Join(os.Getenv("HOME"), "gate-0042")
	t.Cleanup(func() { _ = os.WriteFile(gate, nil, 0o644) }) // the job ends before the worker stops
	e := newUIEnv(t)
	ctx := browser(t)
	signIn(t, ctx, e, "alice")

	// web-7 has no worker yet: the run waits there, queued.
	req, _ := http.NewRequest(http.MethodPost, e.url+"/v1/actions/restart/run", strings.NewReader(`{"host":"web-7","params":{"id":"0042"}}`))
	req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var o struct {
		ID string `json:"id"`
	}
	err = json.NewDecoder(resp.Body).Decode(&o)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("run: %d %v", resp.StatusCode, err)
	}
	step(t, ctx, "open the run page", chromedp.Navigate(e.url+"/ui/orders/"+o.ID), chromedp.WaitVisible(chromedp.ID("run")))
	if st := text(t, ctx, "#status"); st != "queued" {
		t.Fatalf("status %q, want queued", st)
	}
	if !eval[bool](t, ctx, `!!document.getElementById("stop") && !(document.getElementById("job-note") && !document.getElementById("job-note").hidden)`) {
		t.Fatal("a queued job's page offers no Stop, or says it cannot be stopped")
	}

	e.startWorker("web-7")
	const running = `document.getElementById("status").innerText === "running" && !document.getElementById("stop") && ` +
		`!!document.getElementById("job-note") && !document.getElementById("job-note").hidden`
	waitJS(t, ctx, "the open page to take Stop away as the job starts", running, time.Minute)
	step(t, ctx, "load the page afresh", chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("run")))
	waitJS(t, ctx, "the page loaded afresh to offer no Stop", running, 10*time.Second)

	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the job's end", `document.readyState === "complete" && !!document.getElementById("run") && `+
		`!document.getElementById("run").dataset.events && document.getElementById("status").innerText === "succeeded"`, time.Minute)
	if eval[bool](t, ctx, `!!document.getElementById("stop") || !!document.getElementById("job-note")`) {
		t.Fatal("the ended order's page offers Stop or its note")
	}
	if out := text(t, ctx, "#output"); !strings.Contains(out, `"job_result":"done"`) {
		t.Fatalf("output %q", out)
	}
}
