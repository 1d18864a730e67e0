package api

import (
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
)

// Handler returns the API's routes. Every route is listed here.
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.Recoverer)
	r.Use(s.measure)
	r.Use(s.network)
	r.Use(headAsGet)

	r.Get("/healthz", s.handleHealthz)
	r.Get("/readyz", s.handleReadyz)
	if s.Metrics != nil {
		r.Get("/metrics", s.handleMetrics)
	}
	r.Get("/openapi.yaml", s.handleOpenAPI)
	r.Get("/docs", s.handleDocsRedirect)
	r.Get("/docs/", s.handleDocsIndex)
	r.Get("/docs/{file}", s.handleDocsFile)

	r.Route("/v1", func(r chi.Router) {
		r.Use(apiHeaders)
		r.Use(s.limitIP)
		r.Use(s.authenticate)
		r.Use(s.limitPrincipal)
		r.Post("/orders", s.handleSubmit)
		r.Get("/orders", s.handleList)
		r.Get("/orders/{id}", s.noQuery(s.handleGet))
		r.Get("/orders/{id}/events", s.handleEvents)
		r.Get("/batches/{id}", s.handleBatch)
		r.Post("/orders/{id}/cancel", s.noQuery(s.handleCancel))
		r.Get("/hosts", s.noQuery(s.handleHosts))
		r.Get("/hosts/{host}", s.noQuery(s.handleHost))
		r.Delete("/hosts/{host}", s.handleForgetHost)
		r.Post("/hosts/{host}/maintenance", s.handleStartMaintenance)
		r.Delete("/hosts/{host}/maintenance", s.handleEndMaintenance)
		r.Get("/status", s.noQuery(s.handleStatus))
		r.Get("/actions", s.noQuery(s.handleActionList))
		r.Get("/actions/{name}", s.noQuery(s.handleActionGet))
		r.Get("/actions/{name}/choices", s.handleActionChoices)
		r.Post("/actions/{name}/run", s.handleActionRun)
		r.Post("/admin/reload", s.handleReload)
	})
	// Runbook routes also accept the delegated token of a running script
	// (authenticateRunbooks), so they sit outside /v1's authentication.
	r.Group(func(r chi.Router) {
		r.Use(apiHeaders)
		r.Use(s.limitIP)
		r.Use(s.authenticateRunbooks)
		r.Use(s.limitPrincipal)
		r.Get("/v1/runbooks", s.noQuery(s.handleRunbookList))
		r.Get("/v1/runbooks/{name}", s.noQuery(s.handleRunbookGet))
		r.Get("/v1/runbooks/{name}/required-env", s.noQuery(s.handleRunbookEnv))
		r.Get("/v1/runbooks/{name}/history", s.handleRunbookHistory)
		r.Post("/v1/runbooks/{name}/validate", s.noQuery(s.handleRunbookValidate))
		r.Patch("/v1/runbooks/{name}/validate", s.noQuery(s.handleRunbookValidate))
		r.Post("/v1/runbooks/{name}/execute", s.handleRunbookExecute)
	})
	// The web UI (ui.go) calls the routes above through r itself.
	r.Mount("/ui", s.webUIHandler(r))
	mux := r
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, notFound(noRouteMessage(mux, r.URL.Path)))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		allow := allowedMethods(mux, r.URL.Path)
		if allow == "" {
			// chi answers a method it does not know (PRI, FOO) as not
			// allowed on any path, routed or not: where no method is,
			// the path is what is unknown.
			s.writeError(w, r, notFound("no such route"))
			return
		}
		w.Header().Set("Allow", allow) // RFC 9110 §15.5.6
		encode(w, http.StatusMethodNotAllowed, ErrorBody{Error: ErrorDetail{Code: "method_not_allowed",
			Message: "method " + r.Method + " not allowed on " + printableName(r.URL.Path) + ": it takes " + allow}})
	})
	return s.withCompat(r)
}

// headAsGet routes a HEAD request as its GET, so every GET route answers
// HEAD (RFC 9110 §9.3.2) with the GET's status and headers and no body:
// load balancers probe with it, curl -I sends it. A live stream answers a
// HEAD without streaming (handleEvents). The routers have no HEAD routes
// of their own. (chi's middleware.GetHead looks for one first, and
// wrongly finds one at a mounted router's root, /ui/.)
func headAsGet(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			chi.RouteContext(r.Context()).RouteMethod = http.MethodGet
		}
		next.ServeHTTP(w, r)
	})
}

// noRouteMessage says what to ask instead of path, which no route
// serves: the route a trailing slash hides (/v1/orders/ for /v1/orders),
// where the API and the UI are for the bare root, else where the routes
// are listed. A newcomer's first requests are these.
func noRouteMessage(mux *chi.Mux, path string) string {
	if path == "/" {
		return "no such route: the API's routes are under /v1 (GET /v1/orders, GET /v1/hosts), listed at /docs/ and /openapi.yaml; the web UI is at /ui/"
	}
	if trimmed := strings.TrimRight(path, "/"); trimmed != path && trimmed != "" && allowedMethods(mux, trimmed) != "" {
		return "no such route: " + printableName(path) + " ends in /; the route is " + printableName(trimmed)
	}
	return "no such route: " + printableName(path) + " (the API's routes are listed at /docs/ and /openapi.yaml)"
}

// allowedMethods lists the methods the router serves path with, for a
// 405's Allow header.
func allowedMethods(mux *chi.Mux, path string) string {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		if mux.Match(chi.NewRouteContext(), m, path) {
			allow = append(allow, m)
			if m == http.MethodGet {
				allow = append(allow, http.MethodHead) // headAsGet
			}
		}
	}
	return strings.Join(allow, ", ")
}
