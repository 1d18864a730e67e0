package api

import (
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
)

// HostMaintenance is a host's maintenance as the API shows it.
type HostMaintenance struct {
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
	By     string    `json:"by"`
}

func maintenanceView(m postgres.Maintenance) *HostMaintenance {
	return &HostMaintenance{Reason: m.Reason, Since: m.Since.UTC(), By: m.By}
}

// maintenanceRequest is the body of POST /v1/hosts/{host}/maintenance.
// Reason nil (no body, null, {} or "reason": null) keeps a host already
// in maintenance as it is; a reason, "" too, replaces the one recorded.
type maintenanceRequest struct {
	Reason *string `json:"reason"`
}

// maintenanceResponse answers PUT and DELETE /v1/hosts/{host}/maintenance:
// the host's maintenance now (null when it is out of it), and how many of
// its orders wait queued, which the switch leaves alone.
type maintenanceResponse struct {
	Host        string           `json:"host"`
	Maintenance *HostMaintenance `json:"maintenance"`
	QueueDepth  int              `json:"queue_depth"`
}

// maxMaintenanceReason bounds a maintenance's reason, which every refused
// order's message carries.
const maxMaintenanceReason = 500

// handleStartMaintenance is POST /v1/hosts/{host}/maintenance: an admin
// puts a host in maintenance. From then on every API replica refuses new
// orders for it with 409 host_in_maintenance (this one at once, the
// others within intake.MaintenanceEvery); its queued and running orders
// are left alone. Putting a host in maintenance again changes only its
// reason, and only when the request gives one ("" clears it): without
// one it keeps the reason, since and by recorded, and logs nothing.
func (s *Server) handleStartMaintenance(w http.ResponseWriter, r *http.Request) {
	name, ok := s.maintenanceHost(w, r, "putting a host in maintenance")
	if !ok {
		return
	}
	if _, err := queryOf(r, nil); err != nil {
		s.writeError(w, r, err)
		return
	}
	var req maintenanceRequest
	if err := decodeOptional(r, s.Settings().MaxBodyBytes, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	reason := ""
	if req.Reason != nil {
		reason = *req.Reason
	}
	if len(reason) > maxMaintenanceReason {
		s.writeError(w, r, order.FieldError(order.CodeInvalid, "reason", "reason is at most %d bytes", maxMaintenanceReason))
		return
	}
	if order.HasControl(reason, false) {
		s.writeError(w, r, order.FieldError(order.CodeInvalid, "reason", "reason must be UTF-8 text without control characters"))
		return
	}
	p := principalOf(r)
	m, err := s.Store.StartMaintenance(r.Context(), name, req.Reason, p.Name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.Logger.Info("host in maintenance", "host", name, "actor", p.Name, "reason", m.Reason, "by", m.By, "since", m.Since)
	s.answerMaintenance(w, r, name, maintenanceView(m))
}

// handleEndMaintenance is DELETE /v1/hosts/{host}/maintenance: an admin
// takes a host out of maintenance (a host not in it is answered as one
// taken out). Its orders are accepted again.
func (s *Server) handleEndMaintenance(w http.ResponseWriter, r *http.Request) {
	name, ok := s.maintenanceHost(w, r, "taking a host out of maintenance")
	if !ok {
		return
	}
	if _, err := queryOf(r, nil); err != nil {
		s.writeError(w, r, err)
		return
	}
	p := principalOf(r)
	_, was, err := s.Store.EndMaintenance(r.Context(), name, p.Name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if was {
		s.Logger.Info("host out of maintenance", "host", name, "actor", p.Name)
	}
	s.answerMaintenance(w, r, name, nil)
}

// maintenanceHost is the route's host, for an admin: false when the
// request was refused (and answered).
func (s *Server) maintenanceHost(w http.ResponseWriter, r *http.Request, doing string) (string, bool) {
	if !principalOf(r).HasRole("admin") {
		s.writeError(w, r, order.Errorf(order.CodeForbidden, "%s needs the admin role", doing))
		return "", false
	}
	name := chi.URLParam(r, "host")
	if err := order.CheckHost(name); err != nil {
		s.writeError(w, r, err)
		return "", false
	}
	return name, true
}

// answerMaintenance refreshes this replica's view of the hosts in
// maintenance, so that it applies the change to the next order, and
// answers with the host's state.
func (s *Server) answerMaintenance(w http.ResponseWriter, r *http.Request, name string, m *HostMaintenance) {
	if _, err := s.Intake.RefreshMaintenance(r.Context()); err != nil {
		// Recorded: the once-a-second read picks it up.
		s.Logger.Warn("read the hosts in maintenance", "error", err)
	}
	depth, err := s.Store.QueueDepth(r.Context(), name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	encode(w, http.StatusOK, maintenanceResponse{Host: name, Maintenance: m, QueueDepth: depth})
}
