package api_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/api/compat"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/netacl"
	"github.com/orderly-run/orderly/internal/testenv"
)

// httpexecSurface is the httpexec compat surface, mounted as serve
// mounts it (at /, behind the native routes) on an API of its own over
// e's store, bus and worker; its ACL and rates can be changed.
// exec_root is /usr/bin, in the worker's default command_path.
type httpexecSurface struct {
	*apiEnv
	acl              atomic.Pointer[netacl.ACL]
	ratePerIP        atomic.Int64
	ratePerPrincipal atomic.Int64
	maxStreams       atomic.Int64
}

// newHTTPExecSurface starts the surface on host h1; opts are its env's,
// with a worker for h1 unless opts.hosts is empty and not nil.
func newHTTPExecSurface(t *testing.T, opts envOptions) *httpexecSurface {
	t.Helper()
	if opts.hosts == nil || len(opts.hosts) > 0 {
		opts.hosts = []string{"h1"}
	}
	e := newAPIEnv(t, opts)
	root, err := filepath.EvalSymlinks("/usr/bin")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.HTTP.MaxBodyBytes = 1 << 20
	cfg.Compat.HTTPExec = config.HTTPExecCompat{Enabled: true, Prefix: "/", Host: "h1", ExecRoot: root, Principal: "httpexec-client", Roles: []string{"ops"}}
	hx := &httpexecSurface{}
	srv := e.runbookAPI(config.Rule{Name: "httpexec", Roles: []string{"ops"}, Hosts: []string{"h1"},
		Allow: []string{`^` + root + `/(echo|cat|printf|dash|env) `, `^` + root + `/(echo|cat|printf|dash|env)$`}},
		func() api.Settings {
			return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second, RatePerIP: int(hx.ratePerIP.Load()),
				RatePerPrincipal: int(hx.ratePerPrincipal.Load()), MaxStreams: int(hx.maxStreams.Load())}
		}, func() config.Runbooks { return cfg.Runbooks })
	h := &compat.HTTPExec{Deps: compat.Deps{Orders: srv, Config: func() config.Config { return cfg }, ACL: hx.acl.Load},
		Wait: func() time.Duration { return 30 * time.Second }}
	srv.MountCompat(api.CompatSurface{Prefix: "/", Fallback: true, Handler: h})
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	served := *e
	served.url = hs.URL
	hx.apiEnv = &served
	return hx
}

// TestSpecHTTPExecResponses drives the httpexec surface with every status
// its handler answers, and validates each request and response against
// openapi.yaml: status, content type and body. The orders run on a real
// worker.
func TestSpecHTTPExecResponses(t *testing.T) {
	hx := newHTTPExecSurface(t, envOptions{})
	sc := newSurfaceChecker(t, hx.apiEnv, "httpexec")
	// The 404 and Quart's error pages are HTML, which kin-openapi does not
	// decode; their schema is a string.
	openapi3filter.RegisterBodyDecoder("text/html", func(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
		b, err := io.ReadAll(body)
		return string(b), err
	})
	t.Cleanup(func() { openapi3filter.UnregisterBodyDecoder("text/html") })

	// The spec refuses the bodies httpexec answered 500 (400 here).
	spec := sc.doc.Components.Schemas["HTTPExecRequest"].Value
	for _, body := range []map[string]any{{"args": nil}, {"stdin": nil}, {"stdout": nil}, {"stderr": nil}} {
		if err := spec.VisitJSON(body, openapi3.EnableJSONSchema2020()); err == nil {
			t.Errorf("HTTPExecRequest accepts %v", body)
		}
	}

	do := func(want int, c call) []byte {
		t.Helper()
		resp, b := sc.do(c)
		if resp.StatusCode != want {
			t.Errorf("%s %s: %d, want %d: %s", c.method, c.path, resp.StatusCode, want, b)
		}
		return b
	}
	capture := map[string]any{"capture": true}
	do(http.StatusOK, call{method: "POST", path: "/echo"})
	do(http.StatusOK, call{method: "POST", path: "/echo", body: map[string]any{"args": []string{"hi"}, "stdout": capture,
		"stderr": map[string]any{"capture": true, "encode": "base85"}, "environment": map[string]string{"A": "1"}}})
	do(http.StatusOK, call{method: "POST", path: "/cat", body: map[string]any{"stdin": map[string]any{"content": "aGk=", "encode": "base64"},
		"stdout": map[string]any{"capture": true, "encode": "base64"}}})
	do(http.StatusOK, call{method: "POST", path: "/printf", body: map[string]any{"args": []string{`ok\377`}, "stdout": capture}})  // not UTF-8: base64
	do(http.StatusOK, call{method: "POST", path: "/dash", body: map[string]any{"args": []string{"-c", "kill -TERM $$"}}})          // return -15
	do(http.StatusOK, call{method: "POST", path: "/echo", body: "{}", hdr: []string{"Content-Type", "text/plain"}, invalid: true}) // body not read

	for _, v := range []struct {
		want int
		c    call
	}{
		{http.StatusNotFound, call{method: "POST", path: "/nosuch"}},
		{http.StatusMethodNotAllowed, call{method: "GET", path: "/echo", invalid: true, specMethod: "POST"}},
		{http.StatusOK, call{method: "OPTIONS", path: "/echo"}},
		{http.StatusOK, call{method: "OPTIONS", path: "/nosuch"}},
		{http.StatusBadRequest, call{method: "POST", path: "/echo", body: `{"args":`, invalid: true}},
		{http.StatusBadRequest, call{method: "POST", path: "/env", body: map[string]any{"environment": map[string]string{"A=B": "x"}}}},
		// This API has no env_deny of its own: the worker's refuses it,
		// a 403 naming the order (hA12; a 500 before).
		{http.StatusForbidden, call{method: "POST", path: "/env", body: map[string]any{"environment": map[string]string{"LD_PRELOAD": "x"}}}},
		{http.StatusForbidden, call{method: "POST", path: "/true"}}, // the API policy
		{http.StatusRequestEntityTooLarge, call{method: "POST", path: "/echo", body: map[string]any{"args": []string{strings.Repeat("x", 2<<20)}}}},
		{http.StatusRequestEntityTooLarge, call{method: "POST", path: "/cat", body: map[string]any{"stdin": map[string]any{"content": strings.Repeat("x", 600<<10)}}}},
		{http.StatusBadRequest, call{method: "POST", path: "/echo", body: map[string]any{"args": nil}, invalid: true}},
		{http.StatusBadRequest, call{method: "POST", path: "/echo", body: map[string]any{"stdin": nil}, invalid: true}},
		{http.StatusBadRequest, call{method: "POST", path: "/echo", body: map[string]any{"stdout": nil}, invalid: true}},
		{http.StatusBadRequest, call{method: "POST", path: "/echo", body: map[string]any{"stdout": map[string]any{"capture": true, "encode": "hex"}}, invalid: true}},
	} {
		do(v.want, v.c)
	}

	deny, err := netacl.New(config.ACL{Allow: []string{"192.0.2.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	hx.acl.Store(deny)
	do(http.StatusForbidden, call{method: "POST", path: "/echo"})
	do(http.StatusForbidden, call{method: "OPTIONS", path: "/echo"})
	hx.acl.Store(nil)
	hx.ratePerIP.Store(1)
	do(http.StatusOK, call{method: "POST", path: "/echo"})
	do(http.StatusTooManyRequests, call{method: "POST", path: "/echo"})
}

// TestHTTPExecRefusalsAreRecorded checks that what the httpexec surface
// refuses before an order exists is in the rejections table, as the
// native API's and the other surfaces' refusals are (docs/sql.md): the
// network ACL, a body that is not JSON, one over http.max_body_bytes and
// one httpexec could not use (400 here, httpexec's 500).
func TestHTTPExecRefusalsAreRecorded(t *testing.T) {
	hx := newHTTPExecSurface(t, envOptions{})
	send := func(want int, body string) {
		t.Helper()
		resp, err := http.Post(hx.url+"/echo", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("POST /echo %.40q: %d, want %d", body, resp.StatusCode, want)
		}
	}
	send(http.StatusBadRequest, `{"args":`)
	send(http.StatusRequestEntityTooLarge, `{"args":["`+strings.Repeat("x", 2<<20)+`"]}`)
	send(http.StatusBadRequest, `{"args":null}`)
	deny, err := netacl.New(config.ACL{Allow: []string{"192.0.2.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	hx.acl.Store(deny)
	send(http.StatusForbidden, `{}`)

	rows, err := hx.pool.Query(testenv.Context(t), `SELECT principal, client_ip, path, status, code FROM rejections
		WHERE source = 'httpexec' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var principal, ip, path, code string
		var status int
		if err := rows.Scan(&principal, &ip, &path, &status, &code); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %s %s %d %s", principal, ip, path, status, code))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"httpexec-client 127.0.0.1 /echo 400 invalid_request",
		"httpexec-client 127.0.0.1 /echo 413 too_large",
		"httpexec-client 127.0.0.1 /echo 400 invalid_request",
		" 127.0.0.1 /echo 403 forbidden",
	}
	if !slices.Equal(got, want) {
		t.Errorf("rejections:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
