package compat

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/orderly-run/orderly/internal/order"
)

// vigridSignals are the signals /kill accepts, in the order its message
// lists them.
func vigridSignals() []string {
	return []string{"SIGHUP", "SIGINT", "SIGKILL", "SIGTERM", "SIGUSR1", "SIGUSR2"}
}

// status is GET /status: the service, dry-run mode, the host's queue depth
// and its running order.
func (v *Vigrid) status(vr *vigridRequest) {
	running, _, depth, err := v.Orders.HostQueue(vr.r.Context(), vr.p, vr.cfg.Compat.Vigrid.Host)
	if err != nil {
		v.refused(vr, err)
		return
	}
	var current any
	if running != nil {
		current = map[string]any{"order_id": running.ID, "command": running.Command, "arguments": argsOf(running),
			"started_at": timeOrNil(running.StartedAt)}
	}
	vigridJSON(vr.w, http.StatusOK, map[string]any{"status": "ok", "service": vigridService, "version": vigridVersion,
		"dry_run": vr.cfg.Compat.Vigrid.DryRun, "queue_depth": depth, "current_order": current, "timestamp": vigridTime(time.Now())})
}

// queue is GET /queue: the host's running order, then its queued orders
// in the order they will run.
func (v *Vigrid) queue(vr *vigridRequest) {
	running, queued, _, err := v.Orders.HostQueue(vr.r.Context(), vr.p, vr.cfg.Compat.Vigrid.Host)
	if err != nil {
		v.refused(vr, err)
		return
	}
	list := make([]map[string]any, 0, len(queued)+1)
	add := func(o *order.Order, status string) {
		m := v.recall(o.ID)
		list = append(list, map[string]any{"order_id": o.ID, "command": o.Command, "arguments": argsOf(o), "status": status,
			"queued_at": vigridTime(o.SubmittedAt), "started_at": timeOrNil(o.StartedAt), "token_name": o.Principal,
			"client_ip": m.clientIP, "synchronous": m.synchronous})
	}
	if running != nil {
		add(running, "running")
	}
	for _, o := range queued {
		add(o, "queued")
	}
	vigridJSON(vr.w, http.StatusOK, map[string]any{"status": "ok", "queue_size": len(list), "orders": list})
}

// kill is POST /kill: a signal to the host's running order, through the
// recorded cancel path (PostgreSQL first, then the worker), which signals
// the order's whole process group. Queued orders are not touched.
func (v *Vigrid) kill(vr *vigridRequest) {
	if vr.r.ContentLength > vr.cfg.HTTP.MaxBodyBytes { // refused unread, before "100 Continue"
		vigridError(vr.w, http.StatusRequestEntityTooLarge, "Request body too large")
		return
	}
	raw, err := io.ReadAll(io.LimitReader(vr.r.Body, vr.cfg.HTTP.MaxBodyBytes+1))
	if err != nil {
		// Cut short: the part read was taken for the whole body, and
		// the request's context, which net/http ends when the client
		// closes its side, made the queue's read fail: 500.
		vigridError(vr.w, http.StatusBadRequest, "Invalid JSON body")
		return
	}
	if int64(len(raw)) > vr.cfg.HTTP.MaxBodyBytes {
		vigridError(vr.w, http.StatusRequestEntityTooLarge, "Request body too large")
		return
	}
	sig, ok := killSignal(raw)
	if !ok {
		vigridError(vr.w, http.StatusBadRequest, "Invalid JSON body")
		return
	}
	if !slices.Contains(vigridSignals(), sig) {
		vigridError(vr.w, http.StatusBadRequest, "Unsupported signal: "+sig+". Supported: "+strings.Join(vigridSignals(), ", "))
		return
	}
	running, _, _, err := v.Orders.HostQueue(vr.r.Context(), vr.p, vr.cfg.Compat.Vigrid.Host)
	if err != nil {
		v.refused(vr, err)
		return
	}
	if running == nil {
		vigridJSON(vr.w, http.StatusOK, map[string]any{"status": "ok", "message": "No command is currently running"})
		return
	}
	if running.Principal != vr.p.Name && !vr.p.HasRole("admin") {
		// An auditor sees every order but may not end one (as POST
		// /v1/orders/{id}/cancel).
		vigridError(vr.w, http.StatusForbidden, "Command not authorized: only the submitter or an admin may kill this command")
		return
	}
	st, err := v.Orders.CancelOrder(vr.r.Context(), running, vr.p.Name, sig)
	unreachable := err != nil && cancelRecorded(err)
	if err != nil && !unreachable {
		v.refused(vr, err)
		return
	}
	if st != order.StatusRunning {
		vigridJSON(vr.w, http.StatusOK, map[string]any{"status": "ok", "message": "Process already terminated"})
		return
	}
	pid := 0
	if v.PID != nil {
		pid = v.PID(vr.r.Context(), running.ID, running.Attempt)
	}
	// Only the host's worker signals: the request is on record in
	// PostgreSQL either way, and the answer says whether it could go
	// out. Vigrid had no such case (it signalled the child itself), and
	// no message for it: 202, as its other "accepted, not done" answer,
	// with what happens next. A worker that is alive acts on the record
	// at its next heartbeat; one that is gone is replaced by the next
	// worker to take the host, which ends the command (the order then
	// ends interrupted, docs/compat.md).
	recorded := "Signal " + sig + " recorded for PID " + strconv.Itoa(pid) + ", not "
	if online, known := v.Orders.HostOnline(vr.r.Context(), running.Host); known && !online {
		vigridJSON(vr.w, http.StatusAccepted, map[string]any{"status": "ok", "message": recorded +
			"sent: the worker of host " + running.Host + " is offline; the command is ended when a worker next takes the host"})
		return
	}
	if unreachable {
		vigridJSON(vr.w, http.StatusAccepted, map[string]any{"status": "ok", "message": recorded +
			"yet sent: the worker of host " + running.Host + " cannot be reached now; it finds the request at its next heartbeat"})
		return
	}
	vigridJSON(vr.w, http.StatusOK, map[string]any{"status": "ok", "message": "Signal " + sig + " sent to PID " + strconv.Itoa(pid)})
}

// cancelRecorded reports whether err is CancelOrder's for a request it
// recorded but could not wake the worker for (the bus unreachable).
func cancelRecorded(err error) bool {
	var e *order.Error
	if !errors.As(err, &e) || e.Code != order.CodeUnavailable {
		return false
	}
	_, ok := e.Details["order_id"]
	return ok
}

// killSignal is the signal a kill body names, upper-cased as Python's
// str.upper() does (pyUpper), SIGTERM when
// it names none, and false for a body that is not JSON or is a truthy
// value that is not an object. No body, or a falsy one (`null`, `[]`,
// `0`, `""`, `false`), names none, as Flask's `get_json(silent=True) or
// {}` read it: a body that was SIGTERM as `null` is SIGTERM as `[]` too.
func killSignal(raw []byte) (string, bool) {
	var body struct {
		Signal *string `json:"signal"`
	}
	if len(bytes.TrimSpace(raw)) > 0 && !falsyJSON(raw) && pyUnmarshal(raw, &body) != nil {
		return "", false
	}
	if body.Signal == nil {
		return "SIGTERM", true
	}
	return pyUpper(*body.Signal), true
}

func argsOf(o *order.Order) []string {
	if o.Args == nil {
		return []string{}
	}
	return o.Args
}

func timeOrNil(t *time.Time) any {
	if t == nil {
		return nil
	}
	return vigridTime(*t)
}
