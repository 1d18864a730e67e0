package api_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestUILiveBinaryOutputIsNotShownAsText: a command that prints text and
// then bytes that are not UTF-8 is followed live as its text, then a
// note that the stream is binary, and nothing of the bytes (before, they
// showed as replacement characters while the order ran, and the finished
// page then said the stream is binary, a download only). The order is
// held running by a gate file until the live page has been read.
func TestUILiveBinaryOutputIsNotShownAsText(t *testing.T) {
	e := newUIEnv(t)
	ctx := browser(t)
	signIn(t, ctx, e, "alice")
	gate := filepath.Join(t.TempDir(), "go")
	script := `echo before; printf '\377\376\375after\n'; while [ ! -e ` + gate + ` ]; do sleep 0.05; done`
	step(t, ctx, "run the command",
		chromedp.SetValue(chromedp.ID("exec-host"), "web-1"), chromedp.SetValue(chromedp.ID("exec-command"), "sh"),
		chromedp.SetValue(chromedp.ID("exec-args"), "-c\n"+script), chromedp.Click(chromedp.ID("exec-run")))
	waitJS(t, ctx, "the run page", `!!document.getElementById("run")`, 60*time.Second)
	waitJS(t, ctx, "the note that stdout is binary", `document.getElementById("output").innerText.includes("stdout is binary from here")`, 30*time.Second)
	if st := text(t, ctx, "#status"); st != "running" {
		t.Fatalf("status while the gate is shut: %q, want running", st)
	}
	live := eval[string](t, ctx, `document.getElementById("output").innerText`)
	if !strings.Contains(live, "before") || strings.ContainsRune(live, '\uFFFD') || strings.Contains(live, "after") {
		t.Fatalf("live output %q: want the text before the bytes and the note, not the bytes", live)
	}

	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the order to finish", `document.getElementById("status").innerText === "succeeded" && !document.getElementById("run").dataset.events && document.readyState === "complete"`, 30*time.Second)
	if note := text(t, ctx, "#output-note"); !strings.Contains(note, "stdout is binary") {
		t.Fatalf("the finished page's note %q", note)
	}
}
