package api

import (
	"errors"
	"net/http"

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
	// Summary is what changed per part of the security setup: principals,
	// policy rules, ACL entries, worker keys.
	Summary config.Summary `json:"summary"`
	// SHA256 is the hash of the file now loaded.
	SHA256 string `json:"sha256"`
	Config any    `json:"config,omitempty"`
}

// handleReload is POST /v1/admin/reload: the config file, environment and
// flags are loaded again, as on SIGHUP, and applied to every part of the
// process or to none. An invalid file is refused with 422 and the reasons;
// a file that sets nothing with 422 config_empty; one that would remove
// every principal, every policy rule, the ACL or the worker's containment
// with 422 confirmation_required, unless ?confirm= names the SHA-256 of
// that file (the refusal reports it).
func (s *Server) handleReload(w http.ResponseWriter, r *http.Request) {
	if !principalOf(r).HasRole("admin") {
		s.writeError(w, r, order.Errorf(order.CodeForbidden, "reloading the configuration needs the admin role"))
		return
	}
	q, err := queryOf(r, []string{"confirm"})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if s.Reload == nil {
		s.writeError(w, r, order.Errorf(order.CodeUnavailable, "this server cannot reload its configuration"))
		return
	}
	res, err := s.Reload(r.Context(), principalOf(r).Name, q.Get("confirm"))
	if err != nil {
		s.writeError(w, r, reloadError(err))
		return
	}
	resp := reloadResponse{Changed: res.Changed, ChangedKeys: res.ChangedKeys, Summary: res.Summary, SHA256: res.SHA256,
		RestartRequired: res.RestartRequired}
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

// reloadError translates a refused reload into the error envelope. A
// dependency failure (PostgreSQL down while loading tokens) keeps its own
// code; anything else is the file's fault: 422.
func reloadError(err error) error {
	const stays = "configuration refused; nothing changed, the running configuration stays: "
	var (
		ue *config.UnconfirmedError
		oe *order.Error
		ve *config.ValidationError
	)
	switch {
	case errors.As(err, &ue):
		return &order.Error{Code: order.CodeConfirmationRequired, Err: err,
			Message: stays + err.Error(),
			Details: map[string]any{"sha256": ue.SHA256, "removals": ue.Removals, "summary": ue.Summary,
				"confirm": "POST /v1/admin/reload?confirm=" + ue.SHA256}}
	case errors.Is(err, config.ErrEmptyFile):
		return &order.Error{Code: order.CodeConfigEmpty, Err: err, Message: stays + err.Error()}
	case errors.As(err, &oe):
		return &order.Error{Code: oe.Code, Err: err, Message: stays + oe.Message, Details: oe.Details}
	}
	e := &order.Error{Code: order.CodeUnprocessable, Err: err, Message: stays + err.Error(), Details: map[string]any{}}
	var pe *config.PrepareError
	switch {
	case errors.As(err, &ve):
		e.Details["problems"] = ve.Problems
	case errors.As(err, &pe):
		// Refused by the part that builds it (actions, the host policy, a
		// key file): one problem, keyed by that part.
		e.Details["problems"] = []config.Problem{{Key: pe.Part, Message: pe.Err.Error()}}
	}
	return e
}
