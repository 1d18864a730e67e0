package compat

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/pyrepr"
)

// vigridExecute is the execute body with each field raw, for Python's
// conversions (str(), truthiness) in the original's order.
type vigridExecute struct {
	Command     json.RawMessage `json:"command"`
	Arguments   json.RawMessage `json:"arguments"`
	Synchronous json.RawMessage `json:"synchronous"`
	Timeout     json.RawMessage `json:"timeout"`
}

// execute is POST /execute. Checks run in Vigrid's order, first failure
// wins: the body, forbidden characters, authorization, resolution, the
// user; then the order goes through the one intake path, which checks
// again everything the API checks.
func (v *Vigrid) execute(vr *vigridRequest) {
	vc := vr.cfg.Compat.Vigrid
	if vr.r.ContentLength > vr.cfg.HTTP.MaxBodyBytes { // refused unread, before "100 Continue"
		v.refuse(vr, http.StatusRequestEntityTooLarge, "Request body too large", order.Errorf(order.CodeTooLarge, "body too large"))
		return
	}
	raw, err := io.ReadAll(io.LimitReader(vr.r.Body, vr.cfg.HTTP.MaxBodyBytes+1))
	if err != nil {
		// A body cut short (a chunked one that stops, a connection
		// closed) is one that cannot be read, as Flask's get_json found.
		v.refuse(vr, http.StatusBadRequest, "Invalid JSON body", order.Errorf(order.CodeInvalid, "read body: %v", err))
		return
	}
	if int64(len(raw)) > vr.cfg.HTTP.MaxBodyBytes {
		// Vigrid (Flask) had no limit; past orderly's the body is not read
		// at all, so it is not called invalid JSON.
		v.refuse(vr, http.StatusRequestEntityTooLarge, "Request body too large", order.Errorf(order.CodeTooLarge, "body too large"))
		return
	}
	var body *vigridExecute
	if err := pyUnmarshal(raw, &body); err != nil || body == nil {
		v.refuse(vr, http.StatusBadRequest, "Invalid JSON body", order.Errorf(order.CodeInvalid, "invalid JSON body"))
		return
	}
	command := pyStrip(pyStr(body.Command))
	if len(body.Command) == 0 || string(body.Command) == "null" || command == "" {
		v.refuse(vr, http.StatusBadRequest, "Missing 'command' field", order.Errorf(order.CodeInvalid, "missing command"))
		return
	}
	args := []string{}
	if len(body.Arguments) > 0 {
		var list []json.RawMessage
		if err := json.Unmarshal(body.Arguments, &list); err != nil || list == nil {
			v.refuse(vr, http.StatusBadRequest, "'arguments' must be a list", order.Errorf(order.CodeInvalid, "arguments must be a list"))
			return
		}
		for _, a := range list {
			args = append(args, pyStr(a))
		}
	}
	if c, bad := forbiddenIn(args, vr.cfg.Worker.ForbiddenChars); bad {
		v.rejectOrder(vr, vc.Host, http.StatusBadRequest, "Forbidden character in argument: '"+string(c)+"'",
			order.FieldError(order.CodeInvalid, "args", "forbidden character %q in an argument", c))
		return
	}
	runAs := vc.Users[vr.p.Name]
	if runAs == "" {
		runAs = vc.DefaultUser
	}
	if dec, err := v.Authorize(vr.p, vc.Host, command, args, runAs, vc.DryRun); err != nil {
		msg := "Command does not match any allow pattern"
		for _, m := range dec.Matched {
			if _, pat, ok := strings.Cut(m, ":deny:"); ok {
				msg = "Command matches deny pattern: " + pat
				break
			}
		}
		v.rejectOrder(vr, vc.Host, http.StatusForbidden, "Command not authorized: "+msg, err)
		return
	}
	if !resolvable(command, vr.cfg.Worker.CommandPath) {
		v.rejectOrder(vr, vc.Host, http.StatusNotFound, "Command '"+command+"' not found", order.Errorf(order.CodeNotFound, "command %q not found", command))
		return
	}
	if runAs != "" {
		if msg := unusableUser(runAs); msg != "" {
			v.rejectOrder(vr, vc.Host, http.StatusForbidden, msg, order.Errorf(order.CodeForbidden, "%s", msg))
			return
		}
	}
	secs, ok := vigridSeconds(body.Timeout)
	if !ok && !vc.DryRun {
		// Vigrid passed it to subprocess unchecked, which failed the run
		// (return_code -1, a TypeError in stderr) after these checks;
		// nothing runs here either, and the 400 says why. A dry run
		// called no subprocess, so there it succeeded.
		v.rejectOrder(vr, vc.Host, http.StatusBadRequest, "'timeout' must be a number of seconds or null",
			order.FieldError(order.CodeInvalid, "timeout_seconds", "timeout is not a number"))
		return
	}
	o := &order.Order{Kind: order.KindExec, Host: vc.Host, Command: command, Args: args, RunAs: runAs,
		DryRun: vc.DryRun, CaptureStdout: true, CaptureStderr: true, Source: "vigrid", ID: order.NewID()}
	if secs > 0 {
		o.Timeout = vigridTimeout(secs)
	}
	sync := truthy(body.Synchronous)
	wait := time.Duration(0)
	if sync {
		// The caller waits max_wait and vigridSettle at most. An order that
		// would run longer gets max_wait as its timeout, so one that started
		// at once ends by itself in time and the answer has its output.
		if eff := cmp.Or(o.Timeout, vr.cfg.Limits.DefaultTimeout); eff > vc.MaxWait {
			o.Timeout = vc.MaxWait
		}
		wait = vc.MaxWait + vigridSettle
		v.Orders.BindWaiter(o) // an async one's client holds its id
	}
	v.remember(o.ID, vigridMeta{clientIP: vr.ip, synchronous: sync, at: time.Now()})
	// A token removed by a reload ends a synchronous wait as it ends a
	// native one (api.WithCredentialCheck).
	h := vr.r.Header.Get("Authorization")
	ctx := api.WithCredentialCheck(vr.r.Context(), func() bool {
		p, err := v.Auth().Authenticate(h)
		return err != nil || p.Name != vr.p.Name
	})
	done, err := v.Orders.SubmitOrder(ctx, vr.p, o, wait)
	if id, ok := api.CredentialGone(err); ok {
		// Vigrid's answer to a token it does not know, with the order's
		// id as its other answers give it: the order was accepted and
		// goes on, and a client with a valid token can still read it.
		v.forget(o.ID)
		v.Orders.AuditRefusal(vr.r.Context(), vr.r, vr.p.Name, vr.ip, "vigrid", http.StatusUnauthorized, err)
		vigridJSON(vr.w, http.StatusUnauthorized, map[string]any{"status": "error", "message": "Invalid authentication token", "order_id": id})
		return
	}
	if np, ok := unqueued(err); ok {
		// Recorded, but the bus refused it; the reconciler queues it
		// later. Async, that is still "queued for execution"; a sync
		// caller is answered a failure, so it must never run.
		if !sync {
			vigridJSON(vr.w, http.StatusAccepted, map[string]any{"status": "ok", "order_id": np.ID, "message": "Command queued for execution"})
			return
		}
		v.forget(o.ID)
		if err := withdraw(vr.r.Context(), v.Orders, np, vr.p); err != nil {
			v.refused(vr, err)
			return
		}
		vigridError(vr.w, http.StatusInternalServerError, "Internal server error")
		return
	}
	if err != nil {
		v.forget(o.ID)
		v.refused(vr, err)
		return
	}
	if !sync {
		vigridJSON(vr.w, http.StatusAccepted, map[string]any{"status": "ok", "order_id": o.ID, "message": "Command queued for execution"})
		return
	}
	defer v.forget(o.ID)
	if !done.Status.Terminal() && vr.r.Context().Err() != nil {
		abandonWait(vr.r.Context(), v.Orders, done, vr.p.Name, "the Vigrid client went away before the command started")
	}
	if !done.Status.Terminal() {
		// Still queued or running past the wait: the cancel is on record
		// before the answer, which does not wait for the order to end.
		if _, err := v.Orders.CancelOrder(vr.r.Context(), done, vr.p.Name, "SIGKILL"); err != nil {
			v.refused(vr, err)
			return
		}
		vigridJSON(vr.w, http.StatusOK, map[string]any{"status": "ok", "order_id": o.ID,
			"result": map[string]any{"stdout": "", "stderr": "\nCommand timed out.", "return_code": -1, "dry_run": vc.DryRun}})
		return
	}
	if e, status, ok := hostRefusal(done); ok {
		// The host's worker refused what the API allowed: Vigrid's own
		// refusal of the check that failed (403 "Command not authorized:"
		// for the host's rules, its forbidden characters, its users; the
		// code's 4xx with the host's reason otherwise), with the order's
		// id, as its other execute answers carry it. Not 200 with
		// return_code -1, Vigrid's spawn failure: nothing was spawned.
		msg := e.Error()
		if e.Code == order.CodeForbidden {
			msg = "Command not authorized: " + e.Message
		}
		vigridJSON(vr.w, status, map[string]any{"status": "error", "message": msg, "order_id": o.ID})
		return
	}
	vigridJSON(vr.w, http.StatusOK, map[string]any{"status": "ok", "order_id": o.ID, "result": vigridResult(done)})
}

// vigridSeconds reads execute's timeout as Python added it to a time: a
// number (one past a float64 is the largest), true as 1 and false as 0,
// absent or null as none (0). Anything else is not a number (false):
// a string, even of digits, a list or an object raised TypeError in
// Vigrid's subprocess call, and the run failed; it was never the default.
func vigridSeconds(raw json.RawMessage) (float64, bool) {
	switch s := string(bytes.TrimSpace(raw)); {
	case s == "" || s == "null" || s == "false":
		return 0, true
	case s == "true":
		return 1, true
	case s[0] == '-' || s[0] >= '0' && s[0] <= '9':
		f, err := strconv.ParseFloat(s, 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return 0, false
		}
		return f, true
	}
	return 0, false
}

// vigridTimeout is Vigrid's timeout of secs seconds (> 0) as a duration.
// One past what a Duration holds is the largest, so it is treated as any
// timeout above the maximum (a sync execute caps it at max_wait, an async
// one is refused with 422) instead of wrapping round to a negative one
// (400 "must not be negative"); one under a millisecond, orderly's
// least, is a millisecond, not none (the default).
func vigridTimeout(secs float64) time.Duration {
	if secs >= float64(math.MaxInt64)/float64(time.Second) {
		return math.MaxInt64
	}
	return max(time.Duration(secs*float64(time.Second)), time.Millisecond)
}

// vigridSettle is how long past max_wait a synchronous execute waits for
// an order that started at once to record its own timeout (max_wait from
// its start) before it is canceled instead.
const vigridSettle = time.Second

// vigridResult is a finished order as Vigrid's result object.
func vigridResult(o *order.Order) map[string]any {
	res := map[string]any{"stdout": "", "stderr": "", "return_code": 0, "dry_run": o.DryRun}
	if o.DryRun && o.Status == order.StatusSucceeded {
		return res
	}
	var stdout, stderr string
	if o.Result != nil {
		stdout = pyDecode(string(o.Result.Stdout.Content))
		stderr = pyDecode(string(o.Result.Stderr.Content))
	}
	res["stdout"], res["stderr"] = stdout, stderr
	switch rc, ok := returnCode(o.Result); {
	case o.Status == order.StatusTimedOut:
		res["return_code"], res["stderr"] = -1, stderr+"\nCommand timed out."
	case ok:
		res["return_code"] = rc
	default:
		// Never started (canceled, expired; a host's refusal is answered
		// as a refusal before this) or failed to spawn: Vigrid's spawn
		// failure, rc -1 with the reason.
		reason := "order " + string(o.Status)
		if o.Result != nil && o.Result.Error != "" {
			reason = o.Result.Error
		}
		res["return_code"], res["stderr"] = -1, reason
	}
	return res
}

// refuse answers a check that failed before the order existed, and
// records it like the native API's refusals.
func (v *Vigrid) refuse(vr *vigridRequest, status int, msg string, cause error) {
	v.Orders.AuditRefusal(vr.r.Context(), vr.r, vr.p.Name, vr.ip, "vigrid", status, cause)
	vigridError(vr.w, status, msg)
}

// rejectOrder answers a check of the command that failed before the
// order existed: recorded as refuse records it, and logged as intake
// logs the commands it refuses.
func (v *Vigrid) rejectOrder(vr *vigridRequest, host string, status int, msg string, cause error) {
	v.Orders.RejectOrder(vr.r.Context(), vr.r, vr.p.Name, vr.ip, "vigrid", host, status, cause)
	vigridError(vr.w, status, msg)
}

// refused answers an error from the intake path (already recorded there).
func (v *Vigrid) refused(vr *vigridRequest, err error) {
	err = api.ClientClosed(vr.r, err) // its half closed: 400, not 500
	status := api.HTTPStatus(err)
	retryAfter(vr.w, err)
	var e *order.Error
	switch {
	case status >= 500 || !errors.As(err, &e):
		vigridError(vr.w, http.StatusInternalServerError, "Internal server error")
	case status == http.StatusForbidden:
		vigridError(vr.w, status, "Command not authorized: "+e.Message)
	default:
		vigridError(vr.w, status, e.Message)
	}
}

// forbiddenIn finds the first forbidden character of the first argument
// that has one.
func forbiddenIn(args []string, forbidden string) (rune, bool) {
	if forbidden == "" {
		return 0, false
	}
	for _, a := range args {
		for _, c := range a {
			if strings.ContainsRune(forbidden, c) {
				return c, true
			}
		}
	}
	return 0, false
}

// resolvable is Vigrid's lookup: an absolute path must be an executable
// file; anything else is searched in command_path. The worker resolves
// again under its own, stricter rules.
func resolvable(command string, path []string) bool {
	if filepath.IsAbs(command) {
		return executable(command)
	}
	for _, dir := range path {
		if executable(filepath.Join(dir, command)) {
			return true
		}
	}
	return false
}

func executable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// unusableUser is Vigrid's message for a run-as user that does not exist
// or whose login shell is disabled, or "".
func unusableUser(name string) string {
	if _, err := user.Lookup(name); err != nil {
		return "User '" + name + "' does not exist on this system"
	}
	if shell := loginShell(name); strings.HasSuffix(shell, "/nologin") || strings.HasSuffix(shell, "/false") {
		return "User '" + name + "' has a disabled shell: " + shell
	}
	return ""
}

// loginShell reads name's shell from /etc/passwd ("" when not listed
// there, e.g. a directory-service user).
func loginShell(name string) string {
	f, err := os.Open("/etc/passwd")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) == 7 && fields[0] == name {
			return fields[6]
		}
	}
	return ""
}

// pyStr is Python's str() of the value json.loads makes of raw, which is
// how Vigrid turned the command and each argument into text: a string as
// it is, anything else as pyRepr writes it ([1, 'a'], {'k': None}, 1000.0).
func pyStr(raw json.RawMessage) string {
	var s *string
	if json.Unmarshal(raw, &s) == nil && s != nil {
		return *s
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	r, err := pyRepr(dec)
	if err != nil {
		// Not JSON: raw always comes from a body that parsed.
		return string(bytes.TrimSpace(raw))
	}
	return r
}

// pyRepr is Python's repr() of the next value json.loads would make from
// dec's input. Objects keep document order, and a repeated key keeps its
// first place with its last value, as in a dict that json.loads filled.
func pyRepr(dec *json.Decoder) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", err
	}
	switch t := tok.(type) {
	case nil:
		return "None", nil
	case bool:
		if t {
			return "True", nil
		}
		return "False", nil
	case string:
		return pyQuote(t), nil
	case json.Number:
		return pyNumber(string(t)), nil
	}
	if tok == json.Delim('[') {
		var items []string
		for dec.More() {
			item, err := pyRepr(dec)
			if err != nil {
				return "", err
			}
			items = append(items, item)
		}
		_, err := dec.Token()
		return "[" + strings.Join(items, ", ") + "]", err
	}
	var items []string
	at := map[string]int{}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return "", err
		}
		val, err := pyRepr(dec)
		if err != nil {
			return "", err
		}
		item := pyQuote(key.(string)) + ": " + val
		if i, seen := at[key.(string)]; seen {
			items[i] = item
			continue
		}
		at[key.(string)] = len(items)
		items = append(items, item)
	}
	_, err = dec.Token()
	return "{" + strings.Join(items, ", ") + "}", err
}

// pyNumber is str() of the number json.loads makes of the JSON number n:
// an int, exact at any size, when n has no fraction and no exponent, else
// a float written as repr writes one: the shortest digits that read back
// as the same float, in exponent form below 1e-4 and from 1e16 on, with
// ".0" when integral; inf past the largest float.
func pyNumber(n string) string {
	if !strings.ContainsAny(n, ".eE") {
		if n == "-0" {
			return "0"
		}
		return n
	}
	f, _ := strconv.ParseFloat(n, 64) // ±Inf on overflow, as in Python
	switch {
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64) // Python's form too: 1e+16, 1.5e-05
	if exp, _ := strconv.Atoi(e[strings.IndexByte(e, 'e')+1:]); exp < -4 || exp >= 16 {
		return e
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}

// pyQuote is Python's repr() of s.
func pyQuote(s string) string { return pyrepr.Repr(s) }

// truthy is Python's truthiness of a JSON value: absent, null, false, 0,
// "", [] and {} are false; everything else (the string "false" too) is true.
func truthy(raw json.RawMessage) bool {
	switch s := string(bytes.TrimSpace(raw)); s {
	case "", "null", "false", `""`, "[]", "{}":
		return false
	default:
		var f float64
		if json.Unmarshal(raw, &f) == nil {
			return f != 0
		}
		var arr []any
		if json.Unmarshal(raw, &arr) == nil {
			return len(arr) > 0
		}
		var obj map[string]any
		if json.Unmarshal(raw, &obj) == nil {
			return len(obj) > 0
		}
		return true
	}
}
