package main

// The compat surfaces' waiters on a long order under faults (hD15):
// httpexec's synchronous call, the Vigrid Shell API's synchronous execute
// and stage0's execute stream each hold their request open until the
// order ends. An API killed under them, or a NATS restart, must end each
// with its tool's answer or a cut connection: never a hang, never a 500.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// compatLongScript prints a numbered line every 0.2 s, $1 times.
const compatLongScript = `i=0
while [ $i -lt "$1" ]; do
  i=$((i+1))
  echo "line $i"
  sleep 0.2
done
`

// compatWaiter is one compat client's wait: what it got back.
type compatWaiter struct {
	name string
	code int    // HTTP status, 0 when the request failed
	err  error  // the transport's error: a cut connection
	body string // the body read (for stage0, the stream as far as it came)
	took time.Duration
}

// TestFaultsCompatWaitersLongOrder runs three compat waiters at once, each
// on a host of its own, each on an order that prints for 16 s: httpexec
// (POST /longrun), Vigrid (synchronous execute of longrun) and stage0
// (execute of a runbook that runs the same loop). Once they run, one
// fault: the API SIGKILLed (and started again), or nats-server SIGKILLed
// and started 3 s later. Each waiter must end within a bound: with its
// tool's success (httpexec 200 with return 0, Vigrid 200 with
// return_code 0, stage0's done event with return_code 0), or with its
// connection cut; never a 5xx and never a wait past the bound. Each order
// ran once and ended.
func TestFaultsCompatWaitersLongOrder(t *testing.T) {
	for _, tc := range []struct {
		name    string
		inject  func(s *faultStack)
		cutOnly bool // the fault leaves the waiters nothing but a cut connection
	}{
		{"api_kill9", func(s *faultStack) {
			s.killAPI()
			pause(s.t.Context(), 2*time.Second)
			s.startAPI()
		}, true},
		{"api_stop", func(s *faultStack) {
			s.api.signal(syscall.SIGTERM)
			if !s.api.waitExit(60 * time.Second) {
				s.t.Errorf("the API did not stop within 60 s of SIGTERM")
			}
			s.startAPI()
		}, true},
		{"nats_restart", func(s *faultStack) {
			s.nats.kill9()
			pause(s.t.Context(), 3*time.Second)
			s.nats.start()
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runCompatWaiters(t, tc.inject, tc.cutOnly)
		})
	}
}

func runCompatWaiters(t *testing.T, inject func(s *faultStack), cutOnly bool) {
	const ticks = 80 // 16 s
	const secret = "stage0-faults-test-secret-0123456789abcdef"
	root, books := t.TempDir(), t.TempDir()
	// Each order's start, counted from outside: its attempt, the claims
	// PostgreSQL counted, cannot show a second run under one claim.
	starts := filepath.Join(t.TempDir(), "starts")
	started := "echo S >> '" + starts + "'\n"
	if err := os.WriteFile(filepath.Join(root, "longrun"), []byte("#!/bin/sh\n"+started+compatLongScript), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(books, "Long.md"), []byte(runbookDoc("Long", "{}", "  []", "",
		started+strings.ReplaceAll(compatLongScript, `"$1"`, fmt.Sprint(ticks)))), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newFaultStackConf(t, func(conf string) string {
		conf = strings.Replace(conf, "command_path: [/usr/bin, /bin]", fmt.Sprintf("command_path: [%q, /usr/bin, /bin]", root), 1)
		return conf + fmt.Sprintf(`acl:
  allow: ["127.0.0.1/32", "::1/128"]
policy:
  - {name: admin, roles: [admin], hosts: ["*"], allow: [".*"]}
  - {name: httpexec, principals: [httpexec-client], hosts: [hx], allow: [".*"]}
  - {name: stage0, roles: [developer], hosts: [hs], allow: ['^runbook:']}
runbooks: {dir: %q, timeout: 120s, host: hs}
compat:
  httpexec: {enabled: true, host: hx, exec_root: %q, principal: httpexec-client}
  vigrid: {enabled: true, host: hv}
  stage0: {enabled: true, jwt_secret: %q}
`, books, root, secret)
	})
	for _, h := range []string{"hx", "hv", "hs"} {
		w := s.startWorker(h)
		waitLogLine(t, w.faultProc, "worker consuming", time.Minute)
	}
	jwtTok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "ci", "roles": "developer",
		"iss": "dev-idp", "aud": "dev-api", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	type call struct {
		name, path, auth, body string
	}
	calls := []call{
		{"httpexec", "/longrun", "", fmt.Sprintf(`{"args":["%d"],"stdout":{"capture":true}}`, ticks)},
		{"vigrid", "/api/v1/execute", "Bearer " + s.token, fmt.Sprintf(`{"command":"longrun","arguments":["%d"],"synchronous":true}`, ticks)},
		{"stage0", "/api/runbooks/Long.md/execute", "Bearer " + jwtTok, `{}`},
	}
	results := make(chan compatWaiter, len(calls))
	for _, c := range calls {
		go func() {
			w := compatWaiter{name: c.name}
			began := time.Now()
			defer func() { w.took = time.Since(began); results <- w }()
			req, _ := http.NewRequestWithContext(ctx, "POST", s.apiURL+c.path, strings.NewReader(c.body))
			req.Header.Set("Content-Type", "application/json")
			if c.auth != "" {
				req.Header.Set("Authorization", c.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				w.err = err
				return
			}
			defer resp.Body.Close()
			w.code = resp.StatusCode
			b, err := io.ReadAll(resp.Body)
			w.body, w.err = string(b), err
		}()
	}
	// The three orders run.
	hosts := map[string]string{"hx": "httpexec", "hv": "vigrid", "hs": "stage0"}
	ids := map[string]string{}
	waitUntil(t, time.Minute, "the three orders to run", func() bool {
		rows, err := s.pool.Query(ctx, `SELECT host, id::text FROM orders WHERE status = 'running'`)
		if err != nil {
			return false
		}
		defer rows.Close()
		for rows.Next() {
			var h, id string
			if rows.Scan(&h, &id) == nil && hosts[h] != "" {
				ids[hosts[h]] = id
			}
		}
		return len(ids) == 3
	})
	pause(ctx, 2*time.Second)
	s.note("inject")
	injected := time.Now()
	inject(s)
	s.note("injected")
	// Bound: the orders' whole run (16 s), the fault's own time, and a
	// minute for a waiter to notice the end.
	bound := time.After(90 * time.Second)
	got := map[string]compatWaiter{}
	for range calls {
		select {
		case w := <-results:
			got[w.name] = w
		case <-bound:
			var waiting []string
			for _, c := range calls {
				if _, ok := got[c.name]; !ok {
					waiting = append(waiting, c.name)
				}
			}
			t.Fatalf("%v still wait %s after the fault (answered: %+v)", waiting, time.Since(injected).Round(time.Second), got)
		}
	}
	var printed string
	for i := 1; i <= ticks; i++ {
		printed += fmt.Sprintf("line %d\n", i)
	}
	for _, c := range calls {
		w := got[c.name]
		t.Logf("%s: %d, err %v, took %s, body %.300q", w.name, w.code, w.err, w.took.Round(100*time.Millisecond), w.body)
		if w.code >= 500 {
			t.Errorf("%s: answered %d %q", w.name, w.code, w.body)
			continue
		}
		if w.code == 0 || w.err != nil {
			continue // a cut connection: the tool's client sees its server gone
		}
		if cutOnly {
			t.Errorf("%s: answered %d by an API killed under it: %q", w.name, w.code, w.body)
			continue
		}
		switch w.name {
		case "httpexec":
			var r struct {
				Return *int
				Stdout *struct{ Content string }
			}
			if w.code != 200 || json.Unmarshal([]byte(w.body), &r) != nil || r.Return == nil || *r.Return != 0 {
				t.Errorf("httpexec: %d %q, want 200 with return 0", w.code, w.body)
			} else if r.Stdout == nil || r.Stdout.Content != printed {
				t.Errorf("httpexec: stdout %+v, want the %d lines printed", r.Stdout, ticks)
			}
		case "vigrid":
			var r struct {
				Status string
				Result *struct {
					ReturnCode *int `json:"return_code"`
					Stdout     string
				}
			}
			if w.code != 200 || json.Unmarshal([]byte(w.body), &r) != nil || r.Status != "ok" || r.Result == nil ||
				r.Result.ReturnCode == nil || *r.Result.ReturnCode != 0 {
				t.Errorf("vigrid: %d %q, want 200 with return_code 0", w.code, w.body)
			} else if r.Result.Stdout != printed {
				t.Errorf("vigrid: stdout %q, want the %d lines printed", lastBytes(r.Result.Stdout, 200), ticks)
			}
		case "stage0":
			done := stage0DoneEvent(w.body)
			if w.code != 200 || done == nil || done["return_code"] != float64(0) {
				t.Errorf("stage0: %d, done %v, want 200 and a done event with return_code 0; stream %q", w.code, done, lastBytes(w.body, 400))
				break
			}
			var streamed strings.Builder
			for _, ev := range readSSE(t, w.body) {
				if ev.name == "stdout" {
					streamed.WriteString(strings.TrimSuffix(ev.data, "\n") + "\n")
				}
			}
			if streamed.String() != printed || done["stdout"] != printed {
				t.Errorf("stage0: streamed %q, done's stdout %q; want the %d lines printed in each",
					lastBytes(streamed.String(), 200), lastBytes(fmt.Sprint(done["stdout"]), 200), ticks)
			}
		}
	}
	// Each order ran once and ends (a killed API's long orders run on:
	// docs/compat.md).
	for name, id := range ids {
		var st string
		var attempt int
		waitUntil(t, time.Minute, name+"'s order to end", func() bool {
			return s.pool.QueryRow(ctx, `SELECT status, attempt FROM orders WHERE id = $1`, id).Scan(&st, &attempt) == nil &&
				st != "running" && st != "queued"
		})
		if attempt > 1 {
			t.Errorf("%s: attempt %d, the order ran again", name, attempt)
		}
		t.Logf("%s: order %s %s", name, id, st)
	}
	if b, err := os.ReadFile(starts); err != nil || strings.Count(string(b), "S\n") != len(ids) {
		t.Errorf("the %d orders started %d times (their marker, %v), want once each", len(ids), strings.Count(string(b), "S\n"), err)
	}
}

// stage0DoneEvent returns the done event's JSON from a stage0 stream, or nil.
func stage0DoneEvent(stream string) map[string]any {
	sc := bufio.NewScanner(strings.NewReader(stream))
	sc.Buffer(nil, 1<<20)
	inDone := false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "event: done":
			inDone = true
		case inDone && strings.HasPrefix(line, "data: "):
			var m map[string]any
			if json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &m) == nil {
				return m
			}
		}
	}
	return nil
}

func lastBytes(s string, n int) string {
	return s[max(0, len(s)-n):]
}
