package api

import (
	"net/http"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
)

// measure records each request's latency under its route pattern (never
// the raw path, whose ids would explode the label set), and ends a run of
// 503 answers a while after its last (unavailableLog).
func (s *Server) measure(next http.Handler) http.Handler {
	if s.Metrics == nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(w, r)
			s.unavailable.answered(s.logger)
		})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer s.unavailable.answered(s.logger)
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		next.ServeHTTP(ww, r)
		route := "unmatched"
		if rc := chi.RouteContext(r.Context()); rc != nil {
			if p := s.routes.of(rc); p != "" {
				route = p
			}
		}
		status := ww.Status()
		if status >= 500 && r.Context().Err() != nil {
			// The client left before the answer (the server cancels a
			// request's context only after the whole chain returns): a
			// handler's 5xx for its cancelled work, native or in a compat
			// surface's own shape, is not a failure of ours.
			status = statusClientClosed
		}
		s.Metrics.Request(route, r.Method, status, time.Since(start))
	})
}

// handleMetrics is GET /metrics: Prometheus text format. It asks for a
// token like /v1 unless http.metrics_public is set.
func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	if s.Settings().MetricsPublic {
		s.Metrics.Handler().ServeHTTP(w, r)
		return
	}
	s.authenticate(s.Metrics.Handler()).ServeHTTP(w, r)
}

// routeLabels are chi's route patterns (Context.RoutePattern) by the
// patterns a request matched, joined. RoutePattern builds its answer
// anew at each call (a join, then replaces): four allocations on every
// request for a label that names one of the few routes routes.go and
// the compat surfaces mount, so the map stays as small as they are.
type routeLabels struct {
	mu sync.RWMutex
	m  map[string]string
}

// of is rc.RoutePattern(), looked up by the joined patterns in a buffer
// on the stack (a map read with string(b) copies nothing), and computed
// and kept only the first time.
func (l *routeLabels) of(rc *chi.Context) string {
	var buf [192]byte
	b := buf[:0]
	for _, p := range rc.RoutePatterns {
		b = append(b, p...)
	}
	l.mu.RLock()
	label, ok := l.m[string(b)]
	l.mu.RUnlock()
	if ok {
		return label
	}
	label = rc.RoutePattern()
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]string{}
	}
	l.m[string(b)] = label
	l.mu.Unlock()
	return label
}
