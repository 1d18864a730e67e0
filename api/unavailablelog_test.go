package api_test

import (
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestUnavailableAnswersAreLoggedOncePerRun: with PostgreSQL stopped every
// request answers 503, and the log gets one ERROR "request failed" line
// with its cause for the first, not one per request (hB16 saw one each:
// an outage under load flooded the logs); while the 503s go on, an ERROR
// summary at most every 10 s with how many it sums up; and once they
// stop, the first request answered 10 s or more after the last ends the
// run with a WARN line that counts them all, the ones after the last
// summary too.
func TestUnavailableAnswersAreLoggedOncePerRun(t *testing.T) {
	pg := startOwnPG(t)
	logs := &testenv.LogBuffer{}
	e := newAPIEnv(t, envOptions{dsn: pg.srv.DSN(), logger: slog.New(slog.NewJSONHandler(logs, nil))})
	path := "/v1/orders/" + order.NewID().String()
	if code, body := e.do("alice", "GET", path, nil); code != http.StatusNotFound {
		t.Fatalf("an unknown order with PostgreSQL up: %d %s", code, body)
	}
	pg.stop()
	failed := 0
	fail := func() {
		t.Helper()
		if code, body := e.do("alice", "GET", path, nil); code != http.StatusServiceUnavailable {
			t.Fatalf("an order read with PostgreSQL stopped: %d %s", code, body)
		}
		failed++
	}
	for range 20 {
		fail()
	}
	first := logLines(t, logs, "request failed")
	if len(first) != 1 {
		t.Fatalf("%d \"request failed\" lines for %d answers 503, want 1:\n%s", len(first), failed, logs.String())
	}
	if cause, _ := first[0]["error"].(string); cause == "" || first[0]["level"] != "ERROR" {
		t.Errorf("the first failure's line names no cause or is not an ERROR: %v", first[0])
	}
	// A 503 each half second: one run, summed up once 10 s passed.
	testenv.WaitUntil(t, 60*time.Second, "a summary of the 503 answers", func() bool {
		time.Sleep(500 * time.Millisecond) // the pace of the failures, not a wait for one
		fail()
		return len(logLines(t, logs, "requests failed")) > 0
	})
	summaries := logLines(t, logs, "requests failed")
	if n := len(logLines(t, logs, "request failed")); n != 1 || len(summaries) != 1 {
		t.Fatalf("after %d answers 503: %d \"request failed\" and %d summary lines, want 1 and 1:\n%s", failed, n, len(summaries), logs.String())
	}
	summed := int(summaries[0]["not_logged"].(float64))
	if summed+1 != failed || int(summaries[0]["run_total"].(float64)) != failed || summaries[0]["error"] == "" {
		t.Errorf("the summary after %d answers 503: %v", failed, summaries[0])
	}
	for range 5 {
		fail()
	}
	last := time.Now()
	pg.start()
	// The run ends 10 s after its last 503, at the next request answered.
	testenv.WaitUntil(t, 60*time.Second, "the run's end", func() bool {
		time.Sleep(500 * time.Millisecond)
		if code, body := e.do("alice", "GET", path, nil); code != http.StatusNotFound {
			t.Fatalf("an unknown order with PostgreSQL back: %d %s", code, body)
		}
		return len(logLines(t, logs, "requests answered again after failures")) > 0
	})
	if since := time.Since(last); since < 10*time.Second {
		t.Errorf("the run ended %v after its last 503, before 10 s", since)
	}
	end := logLines(t, logs, "requests answered again after failures")
	if len(end) != 1 || end[0]["level"] != "WARN" || int(end[0]["unavailable"].(float64)) != failed || int(end[0]["not_logged"].(float64)) != 5 {
		t.Errorf("the run's end after %d answers 503, 5 after the summary: %v", failed, end)
	}
	if n := len(logLines(t, logs, "request failed")); n != 1 {
		t.Errorf("%d \"request failed\" lines in all, want 1", n)
	}
}
