package api_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/go-chi/chi/v5"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/metrics"
	"github.com/orderly-run/orderly/internal/testenv"
)

// loadSpec parses and lints the embedded OpenAPI document.
func loadSpec(t testing.TB) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(api.OpenAPISpec())
	if err != nil {
		t.Fatalf("load openapi.yaml: %v", err)
	}
	if err := doc.Validate(context.Background(), openapi3.EnableExamplesValidation()); err != nil {
		t.Fatalf("openapi.yaml is not a valid OpenAPI document: %v", err)
	}
	if !doc.IsOpenAPI31OrLater() || doc.IsOpenAPI32OrLater() {
		t.Fatalf("openapi.yaml is OpenAPI %s, want 3.1", doc.OpenAPI)
	}
	return doc
}

// compatSurface is the extension that marks a path as a compat surface's:
// served beside the router (MountCompat), not by it.
const compatSurface = "x-orderly-compat"

// subtree is the extension that marks a path as standing for a whole
// subtree of routes that are not the JSON API (the web UI's pages): its
// value is the prefix, and every route under it counts as described.
const subtree = "x-orderly-subtree"

// subtrees are the prefixes the spec marks with x-orderly-subtree.
func subtrees(doc *openapi3.T) []string {
	var out []string
	for _, item := range doc.Paths.Map() {
		if v, ok := item.Extensions[subtree].(string); ok {
			out = append(out, v)
		}
	}
	return out
}

// nativeOperations are the "METHOD /path" of the spec's native routes.
func nativeOperations(doc *openapi3.T) []string {
	var out []string
	for p, item := range doc.Paths.Map() {
		_, compat := item.Extensions[compatSurface]
		_, sub := item.Extensions[subtree]
		if compat || sub {
			continue
		}
		for method := range item.Operations() {
			out = append(out, method+" "+p)
		}
	}
	sort.Strings(out)
	return out
}

// TestSpecLint loads openapi.yaml and validates it as an OpenAPI 3.1
// document, its examples against their schemas included.
func TestSpecLint(t *testing.T) {
	doc := loadSpec(t)
	for p, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.OperationID == "" || op.Summary == "" || len(op.Tags) == 0 {
				t.Errorf("%s %s: every operation needs an operationId, a summary and a tag", method, p)
			}
			if op.Responses.Len() == 0 {
				t.Errorf("%s %s: no responses", method, p)
			}
		}
	}
}

// TestSpecRoutes walks the router and fails when a route is missing from
// the spec or the spec names a native route that does not exist.
func TestSpecRoutes(t *testing.T) {
	doc := loadSpec(t)
	// Metrics makes /metrics routed; without compat surfaces Handler is
	// the chi router itself.
	srv := api.New(api.Deps{Metrics: metrics.New(), Logger: testenv.Logger(t), Settings: func() api.Settings { return api.Settings{} }})
	mux, ok := srv.Handler().(chi.Routes)
	if !ok {
		t.Fatalf("Handler is %T, want the chi router", srv.Handler())
	}
	var routed []string
	err := chi.Walk(mux, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		routed = append(routed, method+" "+specPath(route))
		if method == http.MethodGet {
			routed = append(routed, http.MethodHead+" "+specPath(route)) // headAsGet
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(routed)
	routed = slices.Compact(routed)
	described := nativeOperations(doc)
	for i, r := range routed {
		// A sub-router's root ("/v1/runbooks/") is served without the
		// slash too; the spec names it as clients call it.
		if trimmed := strings.TrimSuffix(r, "/"); !slices.Contains(described, r) && slices.Contains(described, trimmed) {
			routed[i] = trimmed
		}
	}
	prefixes := subtrees(doc)
	under := map[string]bool{}
	for _, r := range routed {
		_, path, _ := strings.Cut(r, " ")
		if i := slices.IndexFunc(prefixes, func(p string) bool { return strings.HasPrefix(path, p) }); i >= 0 {
			under[prefixes[i]] = true
			continue
		}
		// Every GET answers HEAD (headAsGet), and the spec says so on each.
		if !slices.Contains(described, r) {
			t.Errorf("route %s is not in openapi.yaml", r)
		}
	}
	for _, p := range prefixes {
		if !under[p] {
			t.Errorf("openapi.yaml describes the subtree %s, where nothing is routed", p)
		}
	}
	for _, d := range described {
		if !slices.Contains(routed, d) {
			t.Errorf("openapi.yaml describes %s, which is not routed", d)
		}
	}
}

// specPath turns a chi pattern into the spec's path template: parameters
// are the same ({id}); a regexp parameter ({id:[0-9]+}) loses its regexp,
// and a sub-router's root keeps chi's trailing slash off.
func specPath(route string) string {
	route = regexp.MustCompile(`\{([^}:]+):[^}]*\}`).ReplaceAllString(route, "{$1}")
	if len(route) > 1 && strings.HasSuffix(route, "/*") {
		route = strings.TrimSuffix(route, "*") + "{path}"
	}
	return route
}

// TestDocsServed checks /openapi.yaml and the offline explorer: the page
// and every file it names are served from the binary, and nothing it loads
// comes from another origin.
func TestDocsServed(t *testing.T) {
	srv := api.New(api.Deps{Logger: testenv.Logger(t), Settings: func() api.Settings { return api.Settings{} }})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	get := func(path string) (*http.Response, []byte) {
		t.Helper()
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Get(hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, b
	}

	resp, b := get("/openapi.yaml")
	if resp.StatusCode != http.StatusOK || !bytes.Equal(b, api.OpenAPISpec()) || resp.Header.Get("Content-Type") != "application/yaml" {
		t.Fatalf("/openapi.yaml: %d %s, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(b))
	}
	if resp, _ := get("/docs"); resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "docs/" {
		t.Fatalf("/docs: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, page := get("/docs/")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("/docs/: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(string(page), -1)
	if len(refs) < 4 {
		t.Fatalf("/docs/ names only %d files:\n%s", len(refs), page)
	}
	for _, m := range refs {
		ref := m[1]
		if strings.Contains(ref, "//") || !strings.HasPrefix(ref, "./") {
			t.Errorf("/docs/ loads %q, not a file of its own", ref)
			continue
		}
		if resp, body := get("/docs/" + strings.TrimPrefix(ref, "./")); resp.StatusCode != http.StatusOK || len(body) == 0 {
			t.Errorf("/docs/ names %s, which answers %d", ref, resp.StatusCode)
		}
	}
	_, init := get("/docs/swagger-initializer.js")
	if !strings.Contains(string(init), `url: "../openapi.yaml"`) || !strings.Contains(string(init), "validatorUrl: null") {
		t.Errorf("swagger-initializer.js does not load ../openapi.yaml without a validator:\n%s", init)
	}
	// stage0's addresses of its explorer and spec (its README's) answer ours.
	if resp, b := get("/docs/explorer.html"); resp.StatusCode != http.StatusOK || !bytes.Equal(b, page) {
		t.Errorf("/docs/explorer.html: %d, %d bytes, not /docs/'s page", resp.StatusCode, len(b))
	}
	if resp, b := get("/docs/openapi.yaml"); resp.StatusCode != http.StatusOK || !bytes.Equal(b, api.OpenAPISpec()) ||
		resp.Header.Get("Content-Type") != "application/yaml" {
		t.Errorf("/docs/openapi.yaml: %d %s, %d bytes, not the spec", resp.StatusCode, resp.Header.Get("Content-Type"), len(b))
	}
	for _, path := range []string{"/docs/nope.js", "/docs/..%2fopenapi.yaml", "/docs/web"} {
		resp, b := get(path)
		wantError(t, resp.StatusCode, b, http.StatusNotFound, "not_found")
	}
}

// TestSpecHeaderTooLargeOnEveryOperation: a request line and headers over
// api.MaxHeaderBytes are answered 431 by net/http before any route is
// looked up, so every operation answers it; the spec listed it for POST
// /v1/orders only. Each operation of the spec is sent a query string over
// the limit, on a server set up as the API's (the limit, the listener that
// puts the answer in the envelope), and its answer is validated against
// that operation's responses.
func TestSpecHeaderTooLargeOnEveryOperation(t *testing.T) {
	doc := loadSpec(t)
	srv := api.New(api.Deps{Metrics: metrics.New(), Logger: testenv.Logger(t), Settings: func() api.Settings { return api.Settings{} }})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler(), MaxHeaderBytes: api.MaxHeaderBytes, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(api.ErrorEnvelopeListener(ln)) }()
	t.Cleanup(func() { _ = hs.Close() })
	// net/http reads 4 KiB past the limit before it refuses.
	query := "?q=" + strings.Repeat("q", api.MaxHeaderBytes+8<<10)
	param := regexp.MustCompile(`\{[^}]+\}`)
	ops := 0
	for p, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			ops++
			req, err := http.NewRequestWithContext(testenv.Context(t), method, "http://"+ln.Addr().String()+param.ReplaceAllString(p, "x")+query, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", method, p, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
				t.Errorf("%s %s with a long query: %d, want 431", method, p, resp.StatusCode)
				continue
			}
			if op.Responses.Status(http.StatusRequestHeaderFieldsTooLarge) == nil {
				t.Errorf("%s %s: no 431 in the spec", method, p)
				continue
			}
			in := &openapi3filter.RequestValidationInput{Request: req,
				Route: &routers.Route{Spec: doc, Path: p, PathItem: item, Method: method, Operation: op}}
			out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
				Options: &openapi3filter.Options{IncludeResponseStatus: true, ExcludeResponseBody: method == http.MethodHead}}
			out.SetBodyBytes(b)
			if err := openapi3filter.ValidateResponse(testenv.Context(t), out); err != nil {
				t.Errorf("%s %s: its 431 is not in the spec: %v", method, p, err)
			}
		}
	}
	if ops < 40 {
		t.Fatalf("only %d operations in the spec", ops)
	}
}
