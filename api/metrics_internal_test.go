package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/metrics"
)

// TestMeasureClientGone: a request whose client left before the answer
// is counted as a 4xx (499), whatever the handler then wrote: a compat
// surface answering its cancelled work with a 500 in its original's
// shape is not a server failure. A 500 to a client still there stays a
// 5xx.
func TestMeasureClientGone(t *testing.T) {
	m := metrics.New()
	s := &Server{Deps: Deps{Metrics: m}}
	released := make(chan struct{})
	h := s.measure(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/gone" {
			<-r.Context().Done()
			defer close(released)
		}
		w.WriteHeader(http.StatusInternalServerError)
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := &http.Client{Timeout: 200 * time.Millisecond}
	if resp, err := client.Get(srv.URL + "/gone"); err == nil {
		resp.Body.Close()
		t.Fatal("answered although the handler waits for the client to leave")
	}
	<-released
	resp, err := http.Get(srv.URL + "/here")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	scrape := func() string {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	var body string
	deadline := time.Now().Add(5 * time.Second)
	for {
		body = scrape()
		if strings.Contains(body, `status="4xx"`) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	count := func(class string) string {
		for line := range strings.Lines(body) {
			if strings.HasPrefix(line, "orderly_http_request_duration_seconds_count{") && strings.Contains(line, `status="`+class+`"`) {
				return strings.TrimSpace(line[strings.LastIndexByte(line, ' '):])
			}
		}
		return "0"
	}
	if got := count("4xx"); got != "1" {
		t.Errorf("4xx count %s, want 1 (the client that left)\n%s", got, body)
	}
	if got := count("5xx"); got != "1" {
		t.Errorf("5xx count %s, want 1 (the client that stayed)", got)
	}
}
