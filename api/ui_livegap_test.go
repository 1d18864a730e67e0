package api_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/internal/testenv"
)

// TestUILiveOutputKeepsToOffsetsAcrossANATSRestart: a run page that
// follows an order printing a line every 0.1 s while nats-server
// restarts (its memory stream, the live output, lost; the API's feed
// makes it again and sends "interrupted"; the worker publishes the
// order's chunks again from offset 0) shows, while the order still
// runs, every line once and in order, and no word of a loss: it places
// the chunks by offset, the repeats dropped. Once the order ends it
// shows the kept output, whole. hB15's page appended the chunks past
// the hole as if they followed on; hF16's stopped at "interrupted" and
// showed nothing more live until the end, although nothing was lost.
func TestUILiveOutputKeepsToOffsetsAcrossANATSRestart(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	e := newUIEnvWith(t, testenv.Postgres(t), ns.ClientURL())
	dir := t.TempDir()
	gate, printed, end := filepath.Join(dir, "go"), filepath.Join(dir, "printed"), filepath.Join(dir, "end")
	defer func() { _ = os.WriteFile(gate, nil, 0o644); _ = os.WriteFile(end, nil, 0o644) }()
	ctx := browser(t)
	signIn(t, ctx, e, "alice")
	step(t, ctx, "run a command that prints through a NATS restart",
		chromedp.SetValue(chromedp.ID("exec-host"), "web-1"), chromedp.SetValue(chromedp.ID("exec-command"), "sh"),
		chromedp.SetValue(chromedp.ID("exec-timeout"), "240"), // past the default 60 s on a loaded machine
		chromedp.SetValue(chromedp.ID("exec-args"), "-c\nseq 1 5; while [ ! -e "+gate+" ]; do sleep 0.05; done; "+
			"for i in $(seq 6 300); do echo line $i; sleep 0.1; done; touch "+printed+"; "+
			"while [ ! -e "+end+" ]; do sleep 0.05; done"),
		chromedp.Click(chromedp.ID("exec-run")))
	waitJS(t, ctx, "the first lines live", `!!document.getElementById("output") && document.getElementById("output").textContent === "1\n2\n3\n4\n5\n"`, 20*time.Second)
	id := uuid.MustParse(eval[string](t, ctx, `document.getElementById("run").dataset.order`))
	var kept strings.Builder
	kept.WriteString(seqOutput(5))
	for i := 6; i <= 300; i++ {
		fmt.Fprintf(&kept, "line %d\n", i)
	}

	testenv.NATSServerRestarted(t, ns)
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Every line is published (the stream was made again some 15 s into
	// the 30 s of printing, and the worker then published the earlier
	// ones again); the page shows each once, live.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(printed); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the command did not print its 300 lines in 2 minutes")
		}
		time.Sleep(100 * time.Millisecond)
	}
	wantLive, _ := json.Marshal(kept.String())
	waitJS(t, ctx, "every line live, once and in order, with no word of a loss",
		`document.getElementById("output").textContent === `+string(wantLive)+` && !document.getElementById("interrupted") && `+
			`!document.getElementById("output-note").textContent.includes("interrupted")`, 30*time.Second)
	if o, err := e.store.GetOrder(testenv.Context(t), id); err != nil || o.Status.Terminal() {
		t.Fatalf("the order ended before the page was read: %v, %v", o, err)
	}

	if err := os.WriteFile(end, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	o, err := e.store.GetOrder(testenv.Context(t), id)
	for err == nil && !o.Status.Terminal() {
		time.Sleep(100 * time.Millisecond)
		o, err = e.store.GetOrder(testenv.Context(t), id)
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := string(o.Result.Stdout.Content); o.Status != "succeeded" || got != kept.String() {
		t.Fatalf("the order ended %s with %d bytes kept, want succeeded with the printed %d", o.Status, len(got), kept.Len())
	}
	// The ended page (no event stream) shows the kept output, byte for byte.
	want, _ := json.Marshal(kept.String())
	waitJS(t, ctx, "the ended order's page with the kept output", `document.readyState === "complete" && !!document.getElementById("run") && `+
		`!document.getElementById("run").dataset.events && document.getElementById("status").innerText === "succeeded" && `+
		`document.getElementById("output").textContent === `+string(want), time.Minute)
}

// TestUILiveOutputHoleInOneStreamStaysMarked: a hole in a stream's live
// output (a chunk past what the page shows of it) is marked until
// chunks of that stream fill it. The page kept one mark for both
// streams, so a chunk of stderr that continued what the page showed of
// stderr took the marker and the note away while stdout's hole was
// still there, and the page read as if nothing of stdout were missing.
// No worker serves the host: the chunks are the test's, published as a
// worker publishes them, the last ones what a worker publishes again
// from offset 0 once the live stream is back.
func TestUILiveOutputHoleInOneStreamStaysMarked(t *testing.T) {
	e := newUIEnv(t)
	rec := e.rest("alice", "POST", "/v1/orders", map[string]any{"host": "idle-9", "command": "echo"})
	if rec.Code != 202 {
		t.Fatalf("submit: %d %s", rec.Code, rec.Body)
	}
	var sub struct{ ID uuid.UUID }
	if err := json.Unmarshal(rec.Body.Bytes(), &sub); err != nil {
		t.Fatal(err)
	}
	publish := func(stream string, offset int64, data string) {
		t.Helper()
		if err := e.q.PublishOutput("idle-9", sub.ID, stream, offset, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	ctx := browser(t)
	signIn(t, ctx, e, "alice")
	step(t, ctx, "open the run page", chromedp.Navigate(e.url+"/ui/orders/"+sub.ID.String()))
	const out = `document.getElementById("output").textContent`
	const marked = `!!document.getElementById("interrupted") && document.getElementById("output-note").textContent.includes("interrupted")`

	publish("stdout", 0, "a\n")
	waitJS(t, ctx, "the first chunk live", `!!document.getElementById("output") && `+out+` === "a\n"`, 20*time.Second)
	publish("stdout", 10, "x\n") // 8 bytes of stdout lost before it
	waitJS(t, ctx, "stdout's hole marked", marked, 20*time.Second)
	publish("stderr", 0, "e\n")
	waitJS(t, ctx, "stderr's chunk shown", out+`.includes("e\n")`, 20*time.Second)
	if !eval[bool](t, ctx, marked) {
		t.Fatalf("a chunk of stderr took away the mark of stdout's hole: the page shows %q, note %q",
			eval[string](t, ctx, out), eval[string](t, ctx, `document.getElementById("output-note").textContent`))
	}

	// stdout published again from 0: the hole fills and the mark goes.
	publish("stdout", 0, "a\nbcdefgh\n")
	publish("stdout", 10, "x\n")
	waitJS(t, ctx, "the hole filled and unmarked", out+`.includes("bcdefgh\nx\n") && !(`+marked+`)`, 20*time.Second)
}
