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

// TestCLIHostsSaysAWorkerCutOffFromPostgres: `orderly hosts` says, under
// its table, each online host whose worker cannot reach PostgreSQL (since
// when, how many failed statements and, when the API gives it, why), and
// only those; `orderly hosts HOST` shows it in the host's view. Before,
// such a host was listed online like any other while its orders piled up.
func TestCLIHostsSaysAWorkerCutOffFromPostgres(t *testing.T) {
	const cut = `"postgres_unreachable":{"since":"2026-12-05T23:00:00Z","failures":97,"error":"FATAL: sorry, too many clients already (SQLSTATE 53300)"}`
	host := func(name, extra string) string {
		return `{"host":"` + name + `","online":true,"last_seen":"2026-12-05T23:10:00Z","version":"v1","instance":"` + name +
			`/a","current_order":null,"queue_depth":851` + extra + `}`
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/hosts":
			_, _ = w.Write([]byte(`{"hosts":[` + host("h1", ","+cut) + `,` + host("h2", "") + `]}`))
		case "/v1/hosts/h1":
			_, _ = w.Write([]byte(host("h1", ","+cut)))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	env := []string{"ORDERLY_URL=" + srv.URL, "ORDERLY_TOKEN=ord_abc"}
	r := cli(t, env, "", "hosts")
	wantExit(t, r, 0)
	if !regexpLine(r.stdout, `^h1: worker cannot reach PostgreSQL since 2026-12-05T23:00:00Z \(\S+ ago, 97 failed attempts\), its orders wait: FATAL: sorry, too many clients already \(SQLSTATE 53300\)$`) ||
		strings.Contains(r.stdout, "h2: worker cannot") {
		t.Errorf("hosts: want a line for h1's outage and none for h2:\n%s", r.stdout)
	}
	r = cli(t, env, "", "hosts", "h1")
	wantExit(t, r, 0)
	if !regexpLine(r.stdout, `^PostgreSQL:\s+worker cannot reach PostgreSQL since 2026-12-05T23:00:00Z .*97 failed attempts.*53300\)$`) {
		t.Errorf("hosts h1: no PostgreSQL line:\n%s", r.stdout)
	}
}

// TestCLIHostsSaysOnlineUnknownWithoutNATS: when the API lists the hosts
// without their heartbeats ("registry": "unavailable", NATS did not
// answer it), `orderly hosts` shows ONLINE and STANDBY as "?" and says
// why under its table, and `orderly hosts HOST` likewise; before, every
// host read "no", the fleet seemingly down.
func TestCLIHostsSaysOnlineUnknownWithoutNATS(t *testing.T) {
	host := `{"host":"h1","online":false,"last_seen":"2026-12-06T09:00:00Z","version":"v1","instance":"h1/a","current_order":null,"queue_depth":3,"registry":"unavailable"}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/hosts":
			_, _ = w.Write([]byte(`{"hosts":[` + host + `],"registry":"unavailable"}`))
		case "/v1/hosts/h1":
			_, _ = w.Write([]byte(host))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	env := []string{"ORDERLY_URL=" + srv.URL, "ORDERLY_TOKEN=ord_abc"}
	r := cli(t, env, "", "hosts")
	wantExit(t, r, 0)
	if !regexpLine(r.stdout, `^h1\s+\?\s+\?\s+`) || !strings.Contains(r.stdout, "\n"+registryUnknownNote+"\n") {
		t.Errorf("hosts: want h1 online and standby \"?\" and the note under the table:\n%s", r.stdout)
	}
	r = cli(t, env, "", "hosts", "h1")
	wantExit(t, r, 0)
	if !regexpLine(r.stdout, `^Online:\s+\? \(NATS did not answer`) || !regexpLine(r.stdout, `^Standby:\s+\?$`) {
		t.Errorf("hosts h1: want Online and Standby \"?\":\n%s", r.stdout)
	}
}
