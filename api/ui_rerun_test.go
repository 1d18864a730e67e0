package api_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestUIRunPageShowsARunAgainFromItsStart: a run page that showed an
// idempotent order's output when its worker stopped shows, once another
// worker runs the order again, the new run's output from its start and
// says why. It kept the first run's output and read the new run's
// chunks, from offset 0 again, as repeats of what it showed: "run 1"
// stood on the page while the order printed "run 2".
func TestUIRunPageShowsARunAgainFromItsStart(t *testing.T) {
	e := newUIEnv(t)
	dir := t.TempDir()
	count, gate := filepath.Join(dir, "count"), filepath.Join(dir, "go")
	defer func() { _ = os.WriteFile(gate, nil, 0o644) }()
	// The first run prints and ends; its worker stops before it stores
	// the result. The second holds until the test has read the page.
	o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "rerun-1", Command: "sh",
		Args: []string{"-c", `echo x >> "$1"; n=$(wc -l < "$1"); echo "run $n"; ` +
			`if [ "$n" -gt 1 ]; then while [ ! -e "$2" ]; do sleep 0.05; done; fi`, "_", count, gate},
		Idempotent: true, Timeout: 2 * time.Minute, Principal: "alice", Source: "rest", CaptureStdout: true, CaptureStderr: true}
	if _, err := e.store.InsertOrder(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	errStop := errors.New("the test's stop after the first run")
	firstRan := make(chan struct{})
	stopped := e.startWorkerFailing("rerun-1", func(p string, got *order.Order) error {
		if p == "after_exec" && got.ID == o.ID && got.Attempt == 1 {
			<-firstRan // until the page showed the first run's output
			return errStop
		}
		return nil
	})
	ctx := browser(t)
	signIn(t, ctx, e, "alice")
	step(t, ctx, "open the order's run page", chromedp.Navigate(e.url+"/ui/orders/"+o.ID.String()))
	if _, err := e.q.Publish(t.Context(), "rerun-1", o.ID); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the first run's output", `!!document.getElementById("output") && document.getElementById("output").textContent === "run 1\n"`, time.Minute)
	close(firstRan)
	select {
	case err := <-stopped:
		if !errors.Is(err, errStop) {
			t.Fatalf("the first worker stopped with %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the first worker did not stop")
	}

	e.startWorker("rerun-1")
	waitJS(t, ctx, "the second run's output alone, and why",
		`document.getElementById("output").textContent === "run 2\n" && document.getElementById("output-note").textContent.includes("runs again")`, time.Minute)
	if got, err := e.store.GetOrder(testenv.Context(t), o.ID); err != nil || got.Status.Terminal() || got.Attempt != 2 {
		t.Fatalf("the order while the page was read: %+v, %v; want its second attempt running", got, err)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the ended order's page", `document.readyState === "complete" && !!document.getElementById("status") && `+
		`document.getElementById("status").innerText === "succeeded" && document.getElementById("output").textContent === "run 2\n"`, time.Minute)
}

// TestUIRerunKeepsAUnitNoLongerLoaded: re-running a restart whose unit
// the host no longer lists (systemd unloads a stopped instance, which a
// run still starts) keeps its value chosen in the unit dropdown, marked
// as not loaded, and runs it; before, the dropdown came back on
// "(choose)" with nothing said, and the re-run lost its parameter.
func TestUIRerunKeepsAUnitNoLongerLoaded(t *testing.T) {
	e := newUIEnv(t)
	ctx := browser(t)
	signIn(t, ctx, e, "alice")
	// example@0099.service is none of the host's units (uiUnits).
	req, _ := http.NewRequest(http.MethodPost, e.url+"/v1/actions/restart/run", strings.NewReader(`{"host":"web-1","params":{"id":"0099"}}`))
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
	step(t, ctx, "open the re-run", chromedp.Navigate(e.url+"/ui/?rerun="+o.ID+"#action-restart"))
	waitJS(t, ctx, "the host's units in the dropdown", `!!document.querySelector("select#p-restart-id option[value='0042']")`, 10*time.Second)
	if v := eval[string](t, ctx, `document.getElementById("p-restart-id").value`); v != "0099" {
		t.Fatalf("the re-run's unit is %q, want 0099", v)
	}
	if label := eval[string](t, ctx, `document.getElementById("p-restart-id").selectedOptions[0].textContent`); !strings.Contains(label, "not loaded") {
		t.Fatalf("the re-run's unit reads %q: it does not say the host does not list it", label)
	}
	step(t, ctx, "run it", chromedp.Click(chromedp.ID("run-restart")), chromedp.WaitVisible(chromedp.ID("confirm")),
		chromedp.Click(chromedp.ID("confirm-yes")))
	// Asked in one expression: the page reloads itself as the run ends.
	waitJS(t, ctx, "the new run's page, of 0099", `!!document.getElementById("run") && document.getElementById("run").dataset.order !== "`+o.ID+`" && `+
		`document.querySelector("#run h1").innerText.includes("id=0099")`, 30*time.Second)
}
