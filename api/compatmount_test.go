package api_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/api"
)

// named answers with its name, to tell which surface served a request.
func named(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })
}

// TestCompatSurfacesPreferTheMostSpecific mounts the three surfaces as
// serve does with all of them on at their default prefixes (httpexec
// first, at /): each original's paths reach their own surface, httpexec
// only what no other surface nor a native route serves.
func TestCompatSurfacesPreferTheMostSpecific(t *testing.T) {
	e := newAPIEnv(t, envOptions{compat: []api.CompatSurface{
		{Prefix: "/", Fallback: true, Handler: named("httpexec")},
		{Prefix: "/api", Handler: named("stage0")},
		{Prefix: "/dev-login", Handler: named("stage0")},
		{Prefix: "/api/v1", Handler: named("vigrid")},
	}})
	for path, want := range map[string]string{
		"/api/v1/health":           "vigrid",
		"/api/v1/execute":          "vigrid",
		"/api/runbooks":            "stage0",
		"/api/runbooks/a.md/run":   "stage0",
		"/dev-login":               "stage0",
		"/echo":                    "httpexec",
		"/sub/echo":                "httpexec",
		"/apiary":                  "httpexec",
		"/dev-logins":              "httpexec",
		"/healthz":                 "native",
		"/v1/orders/not-an-order/": "native",
		"/ui/no-such-page":         "native",
		"/ui/orders/x/y/z":         "native",
		"/docs/a/b":                "native",
		"/uix":                     "httpexec",
	} {
		resp, err := http.Post(e.url+path, "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got := string(b)
		if want == "native" {
			if got == "httpexec" || got == "stage0" || got == "vigrid" {
				t.Errorf("POST %s: served by %s, want a native route", path, got)
			}
			continue
		}
		if got != want {
			t.Errorf("POST %s: served by %q, want %s", path, got, want)
		}
	}
}
