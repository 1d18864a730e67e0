package api

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/pyrepr"
	"github.com/orderly-run/orderly/internal/runbook"
)

// runbookCommand is what a script order shows as its command, and what
// policy rules match: "runbook:<file>". No executable is named so, and
// the prefix keeps a rule that allows the command "deploy" from allowing
// the runbook deploy.md.
func runbookCommand(file string) string { return "runbook:" + file }

// handleRunbookExecute is POST /v1/runbooks/{name}/execute: the runbook
// becomes an order of kind script through the one intake path
// (authenticate, validate, authorize, record, publish) and the answer is
// that order's, as POST /v1/orders answers (202, or with ?wait the
// finished order; GET /v1/orders/{id}/events streams its output).
func (s *Server) handleRunbookExecute(w http.ResponseWriter, r *http.Request) {
	wait, err := waitOf(r, s.Settings().MaxWait)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	cond, err := ifMatchOf(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	req, env, err := s.readRunbookRequest(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// As POST /v1/orders: 0 is the default (runbooks.timeout here);
	// req.check judged the rest.
	name, err := runbookName(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	key, err := idempotencyKeyOf(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// The chain headers, once each (chainOf takes the first of two).
	for _, h := range []string{"X-Correlation-Id", "X-Recursion-Stack"} {
		if _, err := headerOnce(r, h); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	c := chainOf(r)
	source := "rest"
	if c.Delegated {
		source = "runbook"
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	run := RunbookRun{File: name, Env: env,
		Host: req.Host, Timeout: time.Duration(req.TimeoutSeconds * float64(time.Second)), RunAs: req.RunAs,
		Chain: c, BaseURL: scheme + "://" + r.Host, Path: "/v1/runbooks", Source: source, Wait: wait, IdempotencyKey: key, IfMatch: cond}
	if f, ok := uiFormOf(r); ok {
		run.Showed = &f.Def
	}
	run.ID = order.NewID()
	final, err := s.RunRunbook(r.Context(), principalOf(r), run)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	setReplayed(w, final.ID != run.ID)
	s.encodeSubmitted(w, r, final)
}

// RunbookRun is one request to run a runbook, from the native route or a
// compat surface.
type RunbookRun struct {
	// ID is the id of the order the run makes (a new one when zero): an
	// answer with another order's is a retry's, answered from its record.
	ID      uuid.UUID
	File    string
	Env     map[string]string // sanitised (runbook.Sanitize)
	Host    string            // "": runbooks.host
	Timeout time.Duration     // 0: runbooks.timeout
	RunAs   string
	Chain   RunbookChain
	// BaseURL is the scheme and host the request came in on, and Path
	// where its runbook routes are: RUNBOOK_URL is runbooks.api_url (or
	// BaseURL) + Path, so a script calls back the surface it was started
	// from.
	BaseURL, Path string
	// Hosts, when Host is empty, are tried in order: the run goes to the
	// first that is not running a runbook of its chain (stage0 clients
	// name no host).
	Hosts []string
	// EnvError is what sanitising the request's env_vars found; it is
	// reported after the recursion, claims and validation checks (which
	// see Env, the well-named variables), where stage0 reported it.
	EnvError error
	Source   string
	Wait     time.Duration
	// Waiter binds the run's order to this API process (BindWaiter): its
	// client follows it here and never learns its id (stage0's execute).
	Waiter bool
	// IdempotencyKey, when set, makes a retry of the same run (the same
	// runbook, host, env_vars, timeout and user, from the same principal)
	// answer with the first run's order, as POST /v1/orders does.
	IdempotencyKey string
	// ServiceEnv, when set, supplies a required variable the request does
	// not set, from the service's own environment (stage0 compat: there a
	// script inherited the service's whole environment; here it gets only
	// the variables its runbook declares).
	ServiceEnv func(name string) (string, bool)
	// Showed, when set, is the sha256 of the runbook that the web UI
	// form asking for this run showed: another version runs nothing
	// (ui_formbind.go).
	Showed *string
	// IfMatch, when set, is the request's If-Match: a runbook whose
	// GET's ETag it does not name runs nothing (ifmatch.go).
	IfMatch *ifMatch
}

// RunbookChain is where a run sits in a chain of sub-runbooks.
type RunbookChain struct {
	Correlation string
	Stack       []string // runbook files already running, outermost first
	Hosts       []string // hosts running them
	Delegated   bool     // the request came with a delegated token
	// Parent is the run whose delegated token made the request (zero
	// without one): a run that waits for its sub-runbook binds it to
	// itself (order.Order.ParentRun).
	Parent uuid.UUID
}

// RunRunbook runs a runbook as p: the checks in stage0's order
// (recursion, Required Claims, validation), then an order of kind script
// through SubmitOrder. Refusals are *order.Error with details.reason:
// runbook_recursion, runbook_depth, runbook_host_busy, runbook_claims
// (recorded as a rejected order) or runbook_invalid (with the problems,
// input files' included); intake may refuse as for any order.
func (s *Server) RunRunbook(ctx context.Context, p auth.Principal, rr RunbookRun) (*order.Order, error) {
	rb, src, cfg, err := s.loadRunbook(rr.File)
	if rr.IdempotencyKey != "" {
		// A retry is answered with its first run before the runbook's
		// checks: a reload since (the runbook changed or gone, its
		// claims, an If-Match naming the old one) refused the retry of a
		// run that was accepted and may have run (intake's Recorded).
		file := rr.File
		if rb != nil {
			file = rb.File
		}
		if prev, err := s.recordedRunbookRun(ctx, p, rr, file); prev != nil || err != nil {
			return prev, err
		}
	}
	if err != nil {
		return nil, err
	}
	if rr.Showed != nil {
		if err := changedRunbook(rb.File, *rr.Showed, rb.SHA256); err != nil {
			return nil, err
		}
	}
	if rr.IfMatch != nil {
		if err := rr.IfMatch.check(etagOf(s.viewOfRunbook(rb, src, cfg)), "runbook", printableName(rb.File)); err != nil {
			return nil, err
		}
	}
	chain := rr.Chain
	if chain.Correlation == "" {
		chain.Correlation = uuid.NewString()
	}
	if slices.Contains(chain.Stack, rb.File) {
		return nil, &order.Error{Code: order.CodeUnprocessable,
			Message: fmt.Sprintf("Recursion detected: Runbook %s already in execution chain: %s", rb.File, pythonList(chain.Stack)),
			Details: map[string]any{"reason": "runbook_recursion", "stack": chain.Stack}}
	}
	if len(chain.Stack) >= cfg.MaxDepth {
		return nil, &order.Error{Code: order.CodeUnprocessable,
			Message: fmt.Sprintf("Recursion depth limit exceeded: %d (max: %d)", len(chain.Stack), cfg.MaxDepth),
			Details: map[string]any{"reason": "runbook_depth", "stack": chain.Stack}}
	}
	host := cmp.Or(rr.Host, cfg.Host)
	if rr.Host == "" && len(rr.Hosts) > 0 {
		host = rr.Hosts[0]
		for _, h := range rr.Hosts {
			if !slices.Contains(chain.Hosts, h) {
				host = h
				break
			}
		}
	}
	if host == "" {
		return nil, order.FieldError(order.CodeUnprocessable, "host", "name a host, or set runbooks.host")
	}
	if slices.Contains(chain.Hosts, host) {
		// A host runs one order at a time: a sub-runbook queued behind
		// the parent that waits for it would wait until the parent's
		// timeout.
		return nil, &order.Error{Code: order.CodeConflict,
			Message: fmt.Sprintf("host %s is running a runbook of this chain; a sub-runbook must run on another host", host),
			Details: map[string]any{"reason": "runbook_host_busy", "hosts": chain.Hosts}}
	}
	env := maps.Clone(rr.Env)
	if env == nil {
		env = map[string]string{}
	}
	if rr.ServiceEnv != nil {
		for _, v := range rb.Env {
			if _, set := env[v.Name]; !set {
				if val, ok := rr.ServiceEnv(v.Name); ok {
					env[v.Name] = val
				}
			}
		}
	}
	o := &order.Order{ID: cmp.Or(rr.ID, order.NewID()), Kind: order.KindScript, Host: host, Command: runbookCommand(rb.File),
		CaptureStdout: true, CaptureStderr: true, Timeout: cmp.Or(rr.Timeout, cfg.Timeout), RunAs: rr.RunAs,
		Principal: p.Name, Source: rr.Source, CorrelationID: chain.Correlation, IdempotencyKey: rr.IdempotencyKey,
		Script: &order.Script{Runbook: rb.File, SHA256: rb.SHA256}}
	if rr.Waiter {
		s.BindWaiter(o)
	}
	if rr.Wait > 0 || rr.Waiter {
		// A run that waits for its sub-runbook goes on after it: once it
		// has ended (killed, canceled, timed out, its worker lost), the
		// child is canceled at its claim rather than started for nobody
		// after the step that waited for it failed. A child the run does
		// not wait for runs whatever becomes of the run.
		o.ParentRun = chain.Parent
	}
	if msg := rb.CheckClaims(runbook.OpExecute, claimsOf(p)); msg != "" {
		o.EnvNames = slices.Sorted(maps.Keys(env))
		if err := s.Runbooks.Store.RecordRefusedRun(ctx, o, msg); err != nil {
			s.logger.Error("record refused runbook run", "order_id", o.ID, "runbook", rb.File, "error", err)
		} else {
			// A rejected order is on record: its state change gets its
			// line, as every order's does (DESIGN §9).
			s.logger.Info("order rejected", "order_id", o.ID, "host", o.Host, "principal", o.Principal, "source", o.Source,
				"code", order.CodeForbidden, "reason", msg, "runbook", rb.File)
			// Counted as the orders table has it: an order, submitted
			// and ended rejected.
			s.Metrics.Submitted(o.Source)
			s.Metrics.Finished(o.Host, order.StatusRejected, -1)
		}
		return nil, &order.Error{Code: order.CodeForbidden, Message: msg,
			Details: map[string]any{"reason": "runbook_claims", "order_id": o.ID}}
	}
	// The same checks as validate, so the two agree.
	if problems := append(src.Check(rb, env, cfg.MaxInputBytes), s.RunbookEnvRefused(rb, env)...); len(problems) > 0 {
		return nil, invalidRunbook(rb, problems)
	}
	if rr.EnvError != nil {
		return nil, &order.Error{Code: order.CodeInvalid, Message: rr.EnvError.Error(),
			Details: map[string]any{"reason": "runbook_env", "field": "env_vars"}}
	}
	// Reading may still fail (the files changed since): same codes.
	files, problems := src.Inputs(rb, cfg.MaxInputBytes)
	if len(problems) > 0 {
		return nil, invalidRunbook(rb, problems)
	}
	o.Script.Body = []byte(rb.Script)
	for _, f := range files {
		o.Script.Files = append(o.Script.Files, order.File{Path: f.Path, Mode: f.Mode, Data: f.Data})
	}

	token, err := delegationToken()
	if err != nil {
		return nil, err
	}
	stack := append(slices.Clone(chain.Stack), rb.File)
	url := strings.TrimRight(cmp.Or(cfg.APIURL, rr.BaseURL), "/") + rr.Path
	o.Env = runbookEnv(env, token, chain.Correlation, url, stack)
	o.EnvNames = slices.Sorted(maps.Keys(o.Env))
	if o.IdempotencyKey != "" {
		o.RequestSHA256 = runbookRequestSum(o, rr)
		o.LegacySHA256 = runbookLegacySum(o, env, rr.Timeout)
	}
	d := postgres.Delegation{OrderID: o.ID, Principal: p.Name, Kind: p.Kind, Roles: p.Roles, Claims: p.Claims,
		CorrelationID: chain.Correlation, Stack: stack, Hosts: append(slices.Clone(chain.Hosts), host)}
	if err := s.Runbooks.Store.InsertDelegation(ctx, token, d); err != nil {
		return nil, err
	}
	final, err := s.SubmitOrder(ctx, p, o, rr.Wait)
	if err != nil {
		// Asked on a context of its own: a client that left mid-submit
		// cancelled ctx, and the question was then never answered.
		if _, gerr := s.Store.GetOrder(context.WithoutCancel(ctx), o.ID); order.ErrorCode(gerr) == order.CodeNotFound {
			// Never recorded: its token must not outlive the refusal.
			s.deleteDelegation(ctx, o.ID)
		}
		return nil, err
	}
	if final.ID != o.ID {
		// A repeated Idempotency-Key, answered with the first run: this
		// request's order and token were never recorded.
		s.deleteDelegation(ctx, o.ID)
	}
	return final, nil
}

// recordedRunbookRun is the run p recorded under rr's idempotency key
// when rr asks for the same run (runbookRequestSum), waited for as the
// first request was; nil, nil when there is none, or when only the
// insert can tell (a run recorded before runbookRequestSum was stored).
func (s *Server) recordedRunbookRun(ctx context.Context, p auth.Principal, rr RunbookRun, file string) (*order.Order, error) {
	o := &order.Order{ID: cmp.Or(rr.ID, order.NewID()), Kind: order.KindScript, Command: runbookCommand(file),
		CaptureStdout: true, CaptureStderr: true, RunAs: rr.RunAs, Principal: p.Name, Source: rr.Source,
		IdempotencyKey: rr.IdempotencyKey}
	o.RequestSHA256 = runbookRequestSum(o, rr)
	return s.recordedOrder(ctx, p, o, rr.Wait, s.Store.GetOrder)
}

// deleteDelegation removes the token made for order id, which was never
// recorded; a wait that ended with the client does not keep it.
func (s *Server) deleteDelegation(ctx context.Context, id uuid.UUID) {
	if err := s.Runbooks.Store.DeleteDelegation(context.WithoutCancel(ctx), id); err != nil {
		s.logger.Warn("delete the delegation of an order not recorded", "order_id", id, "error", err)
	}
}

// runbookRequestSum is the sum an Idempotency-Key binds a run to: what
// the request asks for as it was sent (the runbook, the host it names,
// env_vars, timeout, user). The order's own fingerprint holds what is
// made for each run (its delegated token, its correlation id when the
// request names none, RUNBOOK_URL from the address it came in on), which
// no retry could match, and what the configuration fills in
// (runbooks.host for a request that names none, a variable from the
// service's environment), which a reload or a restart may change between
// a run and its retry. The chain headers say where a request comes from,
// not what it asks: a retry is answered with the first run whatever it
// sends there.
func runbookRequestSum(o *order.Order, rr RunbookRun) []byte {
	req := *o
	req.Host, req.Env, req.EnvNames, req.CorrelationID, req.Timeout = rr.Host, rr.Env, nil, "", rr.Timeout
	return req.RequestSum()
}

// runbookLegacySum is the sum a run recorded before runbookRequestSum
// was stored: with the host and variables the server filled in.
func runbookLegacySum(o *order.Order, env map[string]string, timeout time.Duration) []byte {
	req := *o
	req.Env, req.CorrelationID, req.Timeout = env, "", timeout
	return req.Fingerprint()
}

// runbookEnv is a run's environment: the request's sanitised values, then
// the variables stage0 gave every script, which a request cannot override.
// RUNBOOK_API_TOKEN is a delegated token good only for running runbooks
// while this order runs, never the caller's own credential. The worker
// adds RUNBOOK_EXEC_DIR_HOST once it has made the run directory.
func runbookEnv(env map[string]string, token, correlation, url string, stack []string) map[string]string {
	out := maps.Clone(env)
	if out == nil {
		out = map[string]string{}
	}
	sys := map[string]string{
		"RUNBOOK_API_TOKEN":       token,
		"RUNBOOK_CORRELATION_ID":  correlation,
		"RUNBOOK_URL":             url,
		"RUNBOOK_RECURSION_STACK": pythonJSONList(stack),
		"RUNBOOK_H_AUTH":          "Authorization: Bearer " + token,
		"RUNBOOK_H_CORR":          "X-Correlation-Id: " + correlation,
		"RUNBOOK_H_RECUR":         "X-Recursion-Stack: " + pythonJSONList(stack),
		"RUNBOOK_H_CTYPE":         "Content-Type: application/json",
	}
	// The stack's names may be a client's (X-Recursion-Stack), as the
	// correlation id is: split-safe too.
	safeStack := make([]string, len(stack))
	for i, f := range stack {
		safeStack[i] = splitSafe(f)
	}
	sys["RUNBOOK_HEADERS"] = curlHeaderFlags("X-Recursion-Stack: "+pythonJSONList(safeStack), "X-Correlation-Id: "+splitSafe(correlation),
		sys["RUNBOOK_H_AUTH"], sys["RUNBOOK_H_CTYPE"])
	maps.Copy(out, sys)
	// The worker sets it; a request's value would only show in the record.
	delete(out, "RUNBOOK_EXEC_DIR_HOST")
	return out
}

// curlHeaderFlags is stage0's RUNBOOK_HEADERS, made for `eval curl …
// $RUNBOOK_HEADERS`: -H "<header>" for each header, in stage0's order,
// joined by spaces. Inside the double quotes " \ $ and ` are escaped,
// the only characters a shell acts on there: the correlation id is the
// client's X-Correlation-Id and the stack holds file names and quotes, so
// eval must give curl each header exactly and run nothing else. (stage0
// escaped nothing: the stack's quotes ended its argument early.)
func curlHeaderFlags(headers ...string) string {
	flags := make([]string, len(headers))
	for i, h := range headers {
		var b strings.Builder
		b.WriteString(`-H "`)
		for _, r := range h {
			if strings.ContainsRune("\"\\$`", r) {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
		b.WriteByte('"')
		flags[i] = b.String()
	}
	return strings.Join(flags, " ")
}

// splitSafe percent-encodes what a shell acts on in an unquoted expansion
// (white space splits words, * ? [ ] match file names) and %, in the
// client's correlation id and in each name of the chain: stage0's idiom
// `eval curl … $RUNBOOK_HEADERS` leaves the variable unquoted, so a
// correlation id or an X-Recursion-Stack name of `x /tmp/*` became file
// names pasted into what eval then ran (a file named `$(cmd)` ran cmd).
// A usual id (a UUID) or file name is unchanged; RUNBOOK_H_CORR,
// RUNBOOK_H_RECUR and the other variables keep them as sent.
func splitSafe(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f || strings.IndexByte("*?[]%", c) >= 0 {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// delegationPrefix starts every delegated runbook token, so the runbook
// routes know to look it up instead of treating it as a static token.
const delegationPrefix = "orderly-rb-"

func delegationToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make a delegated token: %w", err)
	}
	return delegationPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

type delegationKey struct{}

// chainOf reads the chain of a request: a delegated token's binding
// (which the script cannot change), else the stage0 headers
// X-Correlation-Id and X-Recursion-Stack (a stack that is not a JSON list
// of strings is ignored, as in stage0).
func chainOf(r *http.Request) RunbookChain {
	if d, ok := r.Context().Value(delegationKey{}).(*postgres.Delegation); ok {
		return RunbookChain{Correlation: d.CorrelationID, Stack: d.Stack, Hosts: d.Hosts, Delegated: true, Parent: d.OrderID}
	}
	return HeaderChain(r)
}

// HeaderChain reads stage0's chain headers: X-Correlation-Id (a new id when
// absent or unprintable) and X-Recursion-Stack (ignored unless a JSON list
// of strings, as in stage0, and unless each could name a file: a NUL,
// which no file name holds, PostgreSQL could not store in the run's
// delegation either).
func HeaderChain(r *http.Request) RunbookChain {
	c := RunbookChain{Correlation: r.Header.Get("X-Correlation-Id")}
	if c.Correlation == "" || len(c.Correlation) > 200 || order.HasControl(c.Correlation, false) {
		c.Correlation = uuid.NewString()
	}
	var stack []string
	if err := json.Unmarshal([]byte(r.Header.Get("X-Recursion-Stack")), &stack); err == nil &&
		!slices.ContainsFunc(stack, func(f string) bool { return strings.ContainsRune(f, 0) }) {
		c.Stack = stack
	}
	return c
}

// pythonList renders names as Python prints a list of strings, as
// stage0's recursion message shows the chain: ['a.md', 'b.md'].
func pythonList(names []string) string { return pyrepr.List(names, pyrepr.Repr) }

// pythonJSONList renders names as Python's json.dumps does, which is what
// stage0's RUNBOOK_RECURSION_STACK held: ["a.md", "b.md"].
func pythonJSONList(names []string) string { return pyrepr.List(names, pyrepr.JSON) }

// authenticateRunbooks is authenticate for the runbook routes, which also
// accept the delegated token of a running script: it acts for the
// principal that started the chain, bound to the chain's correlation id
// and recursion stack, and only on execute and validate.
func (s *Server) authenticateRunbooks(next http.Handler) http.Handler {
	plain := s.authenticate(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !strings.HasPrefix(tok, delegationPrefix) || s.Runbooks == nil || len(r.Header.Values("Authorization")) > 1 {
			plain.ServeHTTP(w, r)
			return
		}
		d, err := s.Runbooks.Store.LookupDelegation(r.Context(), strings.TrimSpace(tok))
		if err == postgres.ErrNoDelegation {
			w.Header().Set("WWW-Authenticate", `Bearer realm="orderly", error="invalid_token"`)
			s.writeError(w, r, order.Errorf(order.CodeUnauthenticated, "the runbook token is not valid: its run has ended or passed its timeout"))
			return
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		p := auth.Principal{Name: d.Principal, Roles: d.Roles, Kind: d.Kind, Claims: d.Claims}
		ctx := context.WithValue(r.Context(), principalKey{}, authedPrincipal{Principal: p})
		r = r.WithContext(context.WithValue(ctx, delegationKey{}, d))
		if r.Method != http.MethodPost && r.Method != http.MethodPatch {
			s.writeError(w, r, order.Errorf(order.CodeForbidden, "a runbook token may only execute or validate runbooks"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
