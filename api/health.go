package api

import (
	"context"
	"net/http"
	"time"

	"github.com/orderly-run/orderly/internal/postgres"
)

// handleHealthz is liveness: the process answers.
func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	encode(w, http.StatusOK, map[string]string{"status": "ok"})
}

// handleReadyz is readiness: PostgreSQL and NATS answer, and NATS
// acknowledges the orders published to it. Config drift is
// reported but does not make the service unready: it keeps serving the
// loaded config until a reload.
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	// Each dependency is asked with a deadline of its own, at once: one
	// that does not answer (a frozen PostgreSQL) used up the deadline
	// the other's check then had, and NATS, answering, read as down.
	// Not under the request's context: net/http ends it when the prober
	// shuts down its writing half after the request (a check by `nc -N`
	// or a load balancer's script), and both dependencies then read as
	// down, 503, to a prober still there to read it. The deadlines bound
	// the checks all the same.
	base := context.WithoutCancel(r.Context())
	pgCtx, cancelPG := context.WithTimeout(base, 2*time.Second)
	defer cancelPG()
	pg := make(chan error, 1)
	go func() { pg <- s.Store.Ping(pgCtx) }()
	ctx, cancel := context.WithTimeout(base, 2*time.Second)
	defer cancel()
	checks := map[string]string{"postgres": "ok", "nats": "ok"}
	reasons := map[string]string{}
	status := http.StatusOK
	if err := s.Queue.Ping(ctx); err != nil {
		checks["nats"] = "unavailable"
		status = http.StatusServiceUnavailable
	} else if err := s.Queue.CheckStreams(ctx); err != nil {
		// Connected, but no stream to take orders (deleted by hand, and
		// not created again).
		checks["nats"] = "unavailable"
		status = http.StatusServiceUnavailable
	} else if err := s.Queue.Storing(); err != nil {
		// Connected, the streams there, yet no publish acknowledged: a
		// server whose store hit a full disk (queue.storing).
		checks["nats"] = "unavailable"
		reasons["nats"] = err.Error()
		status = http.StatusServiceUnavailable
	}
	if err := <-pg; err != nil {
		checks["postgres"] = "unavailable"
		status = http.StatusServiceUnavailable
		if s.PostgresDown != nil {
			if why := s.PostgresDown(); why != "" {
				reasons["postgres"] = why
			}
		}
	}
	body := map[string]any{"checks": checks}
	if len(reasons) > 0 {
		body["reasons"] = reasons
	}
	// PostgreSQL out of disk refuses writes and answers reads (order
	// status, history, the UI), so this replica stays ready: it says so
	// while a write of this process was refused in the last minute.
	if msg, full := postgres.DiskFull(); full && checks["postgres"] == "ok" {
		body["warnings"] = map[string]string{"postgres": msg}
	}
	if s.Status != nil {
		if drift, ok := s.Status()["config_drift"]; ok {
			body["config_drift"] = drift
		}
	}
	if status == http.StatusOK {
		body["status"] = "ready"
	} else {
		body["status"] = "unavailable"
	}
	encode(w, status, body)
}

// handleStatus is GET /v1/status.
func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	body := map[string]any{"version": s.Version}
	if s.Status != nil {
		for k, v := range s.Status() {
			body[k] = v
		}
	}
	encode(w, http.StatusOK, body)
}
