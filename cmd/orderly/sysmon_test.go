package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/api"
)

func TestSysmonEnv(t *testing.T) {
	base := []string{"PATH=/usr/bin:/bin", "HOME=/root"}
	for _, c := range []struct {
		name    string
		args    []string
		environ []string
		want    string // GODEBUG run again with; "" for not run again
	}{
		{"serve", []string{"orderly", "serve", "--data-dir", "d"}, base, sysmonAwake},
		{"api", []string{"orderly", "api"}, base, sysmonAwake},
		{"worker after a flag", []string{"/usr/bin/orderly", "--help", "worker", "--host", "h"}, base, sysmonAwake},
		{"fleet-sim", []string{"orderly", "fleet-sim"}, base, sysmonAwake},
		{"the operator's GODEBUG kept", []string{"orderly", "worker"}, append(slices.Clone(base), "GODEBUG=http2client=0"), "http2client=0," + sysmonAwake},
		{"an empty GODEBUG", []string{"orderly", "api"}, append(slices.Clone(base), "GODEBUG="), sysmonAwake},
		{"schedtrace already said", []string{"orderly", "serve"}, append(slices.Clone(base), "GODEBUG=x=1, schedtrace=0"), ""},
		{"the run again", []string{"orderly", "serve"}, append(slices.Clone(base), "GODEBUG="+sysmonAwake), ""},
		{"a client command", []string{"orderly", "submit", "--host", "serve", "true"}, base, ""},
		{"migrate", []string{"orderly", "migrate", "up"}, base, ""},
		{"no command", []string{"orderly", "--version"}, base, ""},
		{"after --", []string{"orderly", "--", "serve"}, base, ""},
		{"no args", nil, base, ""},
	} {
		env, ok := sysmonEnv(c.args, c.environ)
		if !ok {
			if c.want != "" {
				t.Errorf("%s: not run again, want GODEBUG=%s", c.name, c.want)
			}
			continue
		}
		if c.want == "" {
			t.Errorf("%s: run again with %q", c.name, env)
			continue
		}
		var godebug []string
		for _, kv := range env {
			if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
				godebug = append(godebug, v)
			} else if !slices.Contains(c.environ, kv) {
				t.Errorf("%s: %q added", c.name, kv)
			}
		}
		if len(godebug) != 1 || godebug[0] != c.want {
			t.Errorf("%s: GODEBUG %q, want %q", c.name, godebug, c.want)
		}
		if len(env) != len(base)+1 {
			t.Errorf("%s: environment %q", c.name, env)
		}
	}
}

// TestServeRunsWithTheMonitorAwake starts the real binary: serve is run
// again with sysmonAwake (its /proc environ says so), and an order's
// command does not inherit it (its environment is built, not passed on).
func TestServeRunsWithTheMonitorAwake(t *testing.T) {
	p := startBusServe(t, serveDataDir(t, "orderly-sysmon-"), nil)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.proc.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Split(string(b), "\x00"), "GODEBUG="+sysmonAwake) {
		t.Fatalf("serve's environment has no GODEBUG=%s: %q", sysmonAwake, b)
	}
	code, out := p.do(t, "POST", "/v1/orders?wait=60", map[string]any{"host": "srv", "command": "env"})
	if code != http.StatusOK {
		t.Fatalf("order: %d %s", code, out)
	}
	var o api.Order
	if err := json.Unmarshal(out, &o); err != nil {
		t.Fatal(err)
	}
	if o.Status != "succeeded" || o.Result == nil || o.Result.Stdout.Content == "" {
		t.Fatalf("order: %s", out)
	}
	if strings.Contains(o.Result.Stdout.Content, "GODEBUG") {
		t.Fatalf("the order's command inherited GODEBUG: %q", o.Result.Stdout.Content)
	}
}
