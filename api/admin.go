package api

import (
	"errors"
	"net/http"
	"slices"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
)

// reloadResponse is the answer to a successful POST /v1/admin/reload.
type reloadResponse struct {
	Changed bool `json:"changed"`
	// ChangedKeys are the config keys whose values changed, never the values
	// (they may be secrets).
	ChangedKeys []string `json:"changed_keys"`
	// RestartRequired are the changed keys that only apply after a restart.
	RestartRequired []string `json:"restart_required"`
	Config          any      `json:"config,omitempty"`
}

// handleReload is POST /v1/admin/reload: the config file, environment and
// flags are loaded again, as on SIGHUP. An invalid file is refused with 422
// and the reasons; the running configuration stays.
func (s *Server) handleReload(w http.ResponseWriter, r *http.Request) {
	if !principalOf(r).HasRole("admin") {
		s.writeError(w, r, order.Errorf(order.CodeForbidden, "reloading the configuration needs the admin role"))
		return
	}
	if s.Reload == nil {
		s.writeError(w, r, order.Errorf(order.CodeUnavailable, "this server cannot reload its configuration"))
		return
	}
	keys, err := s.Reload()
	if err != nil {
		var oe *order.Error
		if errors.As(err, &oe) {
			s.writeError(w, r, err)
			return
		}
		e := &order.Error{Code: order.CodeUnprocessable,
			Message: "configuration refused; the running configuration stays: " + err.Error(),
			Details: map[string]any{}, Err: err}
		var ve *config.ValidationError
		if errors.As(err, &ve) {
			e.Details["problems"] = ve.Problems
		}
		s.writeError(w, r, e)
		return
	}
	resp := reloadResponse{Changed: len(keys) > 0, ChangedKeys: keys,
		RestartRequired: slices.DeleteFunc(slices.Clone(keys), func(k string) bool { return !config.RequiresRestart(k) })}
	if resp.ChangedKeys == nil {
		resp.ChangedKeys = []string{}
	}
	if resp.RestartRequired == nil {
		resp.RestartRequired = []string{}
	}
	if s.Status != nil {
		resp.Config = s.Status()["config"]
	}
	encode(w, http.StatusOK, resp)
}
