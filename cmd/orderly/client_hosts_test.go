package main

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// TestCLIHostsSaysTheRestoreGuardOff: `orderly hosts` says, under its
// table, each host whose worker runs without its claim mark, and only
// those; `orderly hosts HOST` shows the guard either way.
func TestCLIHostsSaysTheRestoreGuardOff(t *testing.T) {
	const off = "off: could not read the host's claim mark: NATS did not answer within 2s"
	host := func(name, guard string) string {
		return `{"host":"` + name + `","online":true,"last_seen":"2026-12-04T21:00:00Z","version":"v1","instance":"` + name +
			`/a","current_order":null,"queue_depth":0,"restore_guard":"` + guard + `"}`
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/hosts":
			_, _ = w.Write([]byte(`{"hosts":[` + host("h1", off) + `,` + host("h2", "on") + `]}`))
		case "/v1/hosts/h1":
			_, _ = w.Write([]byte(host("h1", off)))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	env := []string{"ORDERLY_URL=" + srv.URL, "ORDERLY_TOKEN=ord_abc"}
	r := cli(t, env, "", "hosts")
	wantExit(t, r, 0)
	if !strings.Contains(r.stdout, "\nh1: restore guard "+off+"\n") || strings.Contains(r.stdout, "h2: restore guard") {
		t.Errorf("hosts: want a line for h1's guard, off, and none for h2's:\n%s", r.stdout)
	}
	r = cli(t, env, "", "hosts", "h1")
	wantExit(t, r, 0)
	if !regexpLine(r.stdout, `^Restore guard:\s+`+regexp.QuoteMeta(off)+`$`) {
		t.Errorf("hosts h1: no restore guard line:\n%s", r.stdout)
	}
}
