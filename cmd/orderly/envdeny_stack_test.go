package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/config"
)

// TestWorkerEnvDenyLongerThanTheAPIs: the API screens environment names
// against its own worker.env_deny as an early courtesy; a worker whose
// list is longer refuses the rest itself, and that refusal reaches the
// client clearly: over REST (an order, a runbook) the answer is the
// order, status rejected, its error naming the variable, the host's
// rule and the code; in the web UI the run page shows the same. Nothing
// runs. The API's own list still answers at once (403).
func TestWorkerEnvDenyLongerThanTheAPIs(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Greet.md"),
		[]byte(runbookDoc("Greet", "GREETING: What to say", "  []", "", `echo "said $GREETING"`)), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newSecStack(t, fmt.Sprintf("runbooks:\n  dir: %q\n  host: strict\n", dir), nil, "loose")
	s.startWorkerWith("strict", func(w *config.Worker) { w.EnvDeny = append(config.DefaultEnvDeny(), "GREETING") })
	const refusal = `forbidden: environment variable GREETING may not be set on this host (env_deny "GREETING")`
	rejected := func(what string, o api.Order) {
		t.Helper()
		if o.Status != "rejected" || o.Result == nil || o.Result.Error == nil || *o.Result.Error != refusal ||
			o.Result.ExitCode != nil || o.Result.Stdout.Content != "" {
			b, _ := json.Marshal(o)
			t.Fatalf("%s: %s, want rejected with %q and nothing run", what, b, refusal)
		}
	}

	// REST: the API lets GREETING through; the strict host refuses it.
	body := map[string]any{"host": "strict", "command": "printenv", "args": []string{"GREETING"}, "env": map[string]string{"GREETING": "hi"}}
	rejected("an order", s.submit(body, "?wait=30", http.StatusOK))
	body["host"] = "loose"
	if o := s.submit(body, "?wait=30", http.StatusOK); o.Status != "succeeded" || o.Result.Stdout.Content != "hi\n" {
		t.Fatalf("the same order on a host whose list is the API's: %s %v", o.Status, o.Result)
	}
	// The API's own list answers at once, before any order exists.
	code, b := s.do("POST", "/v1/orders", map[string]any{"host": "strict", "command": "true", "env": map[string]string{"LD_PRELOAD": "/x.so"}})
	var eb api.ErrorBody
	if code != http.StatusForbidden || json.Unmarshal(b, &eb) != nil || eb.Error.Code != "forbidden" || eb.Error.Details["field"] != "env" {
		t.Fatalf("a name the API's own list refuses: %d %s", code, b)
	}

	// A runbook: valid as far as the API can tell, refused by its host.
	code, b = s.do("POST", "/v1/runbooks/Greet.md/validate", map[string]any{"env_vars": map[string]string{"GREETING": "hi"}})
	if code != http.StatusOK {
		t.Fatalf("validate: %d %s", code, b)
	}
	code, b = s.do("POST", "/v1/runbooks/Greet.md/execute?wait=30", map[string]any{"env_vars": map[string]string{"GREETING": "hi"}})
	var o api.Order
	if code != http.StatusOK || json.Unmarshal(b, &o) != nil {
		t.Fatalf("execute: %d %s", code, b)
	}
	rejected("a runbook", o)

	// The web UI: the run page of the order the exec form submitted.
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	page := func(resp *http.Response, err error) (string, string) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d\n%.500s", resp.Request.URL, resp.StatusCode, b)
		}
		return resp.Request.URL.Path, string(b)
	}
	_, signin := page(c.Get(s.url + "/ui/"))
	_, after, _ := strings.Cut(signin, `name="signin" value="`)
	nonce, _, _ := strings.Cut(after, `"`)
	_, dash := page(c.PostForm(s.url+"/ui/signin", url.Values{"signin": {nonce}, "token": {s.token}}))
	_, after, _ = strings.Cut(dash, `data-csrf="`)
	csrf, _, _ := strings.Cut(after, `"`)
	runPath, run := page(c.PostForm(s.url+"/ui/exec", url.Values{"csrf": {csrf}, "host": {"strict"}, "command": {"printenv"},
		"args": {"GREETING"}, "env": {"GREETING=hi"}}))
	if !strings.HasPrefix(runPath, "/ui/orders/") {
		t.Fatalf("the exec form led to %s\n%.500s", runPath, run)
	}
	shown := strings.ReplaceAll(refusal, `"`, "&#34;")
	deadline := time.Now().Add(30 * time.Second)
	for tick := time.NewTicker(100 * time.Millisecond); !strings.Contains(run, `id="run-error">`+shown); <-tick.C {
		if time.Now().After(deadline) {
			t.Fatalf("the run page does not show the worker's refusal:\n%s", run)
		}
		_, run = page(c.Get(s.url + runPath))
	}
	if !strings.Contains(run, `class="badge rejected"`) {
		t.Errorf("the run page does not say rejected:\n%s", run)
	}
}
