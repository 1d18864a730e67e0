package api_test

import (
	"errors"
	"os"
	"path/filepath"
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
