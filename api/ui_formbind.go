package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"

	"github.com/orderly-run/orderly/internal/action"
	"github.com/orderly-run/orderly/internal/order"
)

// A web UI form is bound to the definition it showed. A page may stay
// open for hours while the configuration is reloaded: an action whose
// command, params or secrets changed meanwhile would otherwise run its
// new definition with the values typed into the old form (a param that
// became secret shown and sent as plain text, a value meant for another
// command). The form carries the digest of the action it rendered (the
// runbook's sha256 for a runbook), and the run it asks for is refused
// with 409 when the definition is no longer that one. The check is made
// by the native handler against the very definition the run then uses,
// so a reload between the check and the run cannot slip through.

// uiFormKey carries a uiForm on the web UI's call to run an action or a
// runbook. Only the server sets it: no client can.
type uiFormKey struct{}

// uiForm is what a submitted UI form was rendered from.
type uiForm struct {
	// Def is the actionDigest of the action, or the sha256 of the
	// runbook, that the form showed; "" (a form without it) matches none.
	Def string
	// Confirmed is set when the person confirmed an action's run (the
	// dialog, or the form's checkbox without JavaScript).
	Confirmed bool
}

// withUIForm returns r with f for the native handler its call reaches.
func withUIForm(r *http.Request, f uiForm) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), uiFormKey{}, f))
}

// uiFormOf is the form r's run was submitted from, when the web UI sent it.
func uiFormOf(r *http.Request) (uiForm, bool) {
	f, ok := r.Context().Value(uiFormKey{}).(uiForm)
	return f, ok
}

// actionDigest identifies what a form of action v shows and sends: its
// title, description, command or unit, run-as user, timeout,
// confirmation and params (their types, rules, defaults and secrecy).
// Hosts and the run limit are left out: the run checks them afresh and
// they change nothing the person read or typed.
func actionDigest(v ActionView) string {
	v.Hosts, v.Limit = nil, nil
	b, _ := json.Marshal(v) // plain strings, numbers and slices: never fails
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// checkUIAction refuses a run from a web UI form that showed another
// definition of d, or that was not confirmed when d asks for it.
func checkUIAction(r *http.Request, d *action.Def) error {
	f, ok := uiFormOf(r)
	if !ok {
		return nil
	}
	if f.Def != actionDigest(viewOf(d)) {
		return &order.Error{Code: order.CodeConflict,
			Message: "action " + d.Name + " changed since this page was loaded (nothing was run): reload the page, check its form and run it again",
			Details: map[string]any{"reason": "action_changed", "action": d.Name}}
	}
	if d.Confirm && !f.Confirmed {
		// Without JavaScript the form's confirmation is a required
		// checkbox: a form without it runs nothing.
		return &order.Error{Code: order.CodeUnprocessable, Message: "confirm the run first (nothing was run)",
			Details: map[string]any{"reason": "confirmation_missing", "action": d.Name}}
	}
	return nil
}

// changedRunbook refuses a run from a web UI form that showed another
// version of the runbook (sha256 of the file).
func changedRunbook(file, showed, now string) error {
	if showed == now {
		return nil
	}
	return &order.Error{Code: order.CodeConflict,
		Message: "runbook " + printableName(file) + " changed since this page was loaded (nothing was run): reload the page, check it and run it again",
		Details: map[string]any{"reason": "runbook_changed", "runbook": printableName(file)}}
}
