package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/orderly-run/orderly/internal/postgres"
)

// foreignGenerationWarned is how long /readyz warns of a publish
// generation read signed with another key (queue.ForeignGenerations):
// replicas read it only as orders flow, so a quiet hour does not mean
// the seeds agree again; the ERROR line is said once an hour as well.
const foreignGenerationWarned = time.Hour

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
	warnings := map[string]string{}
	if msg, full := postgres.DiskFull(); full && checks["postgres"] == "ok" {
		warnings["postgres"] = msg
	}
	// Replicas on different NATS seeds serve every request, and write
	// over each other's publish generation, which blinds the restore
	// guard: said while this one read another's within the hour.
	if n, last := s.Queue.ForeignGenerations(); n > 0 && time.Since(last) < foreignGenerationWarned {
		// Counts and a time only, as anyone may call /readyz: the
		// ERROR line names the setting.
		warnings["nats"] = fmt.Sprintf("publish generation signed with another key: %d reads since start, the last at %s",
			n, last.UTC().Format(time.RFC3339))
	}
	if len(warnings) > 0 {
		body["warnings"] = warnings
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
