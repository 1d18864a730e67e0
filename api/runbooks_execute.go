package api

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
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
// finished order; GET /v1/orders/{id}/events streams its output). Checks
// run in stage0's order: recursion, claims, validation.
func (s *Server) handleRunbookExecute(w http.ResponseWriter, r *http.Request) {
	set := s.Settings()
	wait, err := waitOf(r, set.MaxWait)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	rb, src, cfg, err := s.pathRunbook(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	req, env, err := s.readRunbookRequest(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	p := principalOf(r)
	chain := chainOf(r)
	if slices.Contains(chain.stack, rb.File) {
		s.writeError(w, r, &order.Error{Code: order.CodeUnprocessable,
			Message: fmt.Sprintf("Recursion detected: Runbook %s already in execution chain: %s", rb.File, pythonList(chain.stack)),
			Details: map[string]any{"reason": "runbook_recursion", "stack": chain.stack}})
		return
	}
	if len(chain.stack) >= cfg.MaxDepth {
		s.writeError(w, r, &order.Error{Code: order.CodeUnprocessable,
			Message: fmt.Sprintf("Recursion depth limit exceeded: %d (max: %d)", len(chain.stack), cfg.MaxDepth),
			Details: map[string]any{"reason": "runbook_depth", "stack": chain.stack}})
		return
	}
	host := req.Host
	if host == "" {
		host = cfg.Host
	}
	if host == "" {
		s.writeError(w, r, order.FieldError(order.CodeUnprocessable, "host", "name a host, or set runbooks.host"))
		return
	}
	if slices.Contains(chain.hosts, host) {
		// A host runs one order at a time: a sub-runbook queued behind
		// the parent that waits for it would wait until the parent's
		// timeout.
		s.writeError(w, r, &order.Error{Code: order.CodeConflict,
			Message: fmt.Sprintf("host %s is running a runbook of this chain; a sub-runbook must run on another host", host),
			Details: map[string]any{"reason": "runbook_host_busy", "hosts": chain.hosts}})
		return
	}
	timeout := cfg.Timeout
	if req.TimeoutSeconds < 0 || math.IsNaN(req.TimeoutSeconds) || req.TimeoutSeconds > 1e9 {
		s.writeError(w, r, order.FieldError(order.CodeInvalid, "timeout_seconds", "timeout_seconds must be a positive number of seconds"))
		return
	}
	if req.TimeoutSeconds > 0 {
		timeout = time.Duration(req.TimeoutSeconds * float64(time.Second))
	}
	o := &order.Order{ID: order.NewID(), Kind: order.KindScript, Host: host, Command: runbookCommand(rb.File),
		CaptureStdout: true, CaptureStderr: true, Timeout: timeout, RunAs: req.RunAs, Principal: p.Name,
		Source: "rest", CorrelationID: chain.correlation,
		Script: &order.Script{Runbook: rb.File, SHA256: rb.SHA256}}
	if chain.delegated {
		o.Source = "runbook"
	}
	if msg := rb.CheckClaims(runbook.OpExecute, claimsOf(p)); msg != "" {
		o.EnvNames = slices.Sorted(maps.Keys(env))
		if err := s.Runbooks.Store.RecordRefusedRun(r.Context(), o, msg); err != nil {
			s.logger.Error("record refused runbook run", "order_id", o.ID, "runbook", rb.File, "error", err)
		}
		s.writeError(w, r, &order.Error{Code: order.CodeForbidden, Message: msg,
			Details: map[string]any{"reason": "runbook_claims", "order_id": o.ID}})
		return
	}
	if problems := rb.Judge(env, src.Exists); len(problems) > 0 {
		s.writeError(w, r, invalidRunbook(rb, problems))
		return
	}
	files, err := src.Inputs(rb, cfg.MaxInputBytes-int64(len(rb.Script)))
	if err != nil {
		s.writeError(w, r, &order.Error{Code: order.CodeUnprocessable, Message: err.Error(),
			Details: map[string]any{"reason": "runbook_inputs"}, Err: err})
		return
	}
	o.Script.Body = []byte(rb.Script)
	for _, f := range files {
		o.Script.Files = append(o.Script.Files, order.File{Path: f.Path, Mode: f.Mode, Data: f.Data})
	}
	if int64(o.Script.Size()) > cfg.MaxInputBytes {
		s.writeError(w, r, order.FieldError(order.CodeTooLarge, "script",
			"the script and its input files are larger than runbooks.max_input_bytes (%d bytes)", cfg.MaxInputBytes))
		return
	}

	token, err := delegationToken()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	stack := append(slices.Clone(chain.stack), rb.File)
	base := cfg.APIURL
	if base == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		base = scheme + "://" + r.Host
	}
	o.Env = runbookEnv(env, token, chain.correlation, strings.TrimRight(base, "/")+"/v1/runbooks", pythonJSONList(stack))
	o.EnvNames = slices.Sorted(maps.Keys(o.Env))
	d := postgres.Delegation{OrderID: o.ID, Principal: p.Name, Kind: p.Kind, Roles: p.Roles, Claims: p.Claims,
		CorrelationID: chain.correlation, Stack: stack, Hosts: append(slices.Clone(chain.hosts), host)}
	if err := s.Runbooks.Store.InsertDelegation(r.Context(), token, d); err != nil {
		s.writeError(w, r, err)
		return
	}
	final, err := s.SubmitOrder(r.Context(), p, o, wait)
	if err != nil {
		if _, gerr := s.Store.GetOrder(r.Context(), o.ID); order.ErrorCode(gerr) == order.CodeNotFound {
			// Never recorded: its token must not outlive the refusal.
			if derr := s.Runbooks.Store.DeleteDelegation(r.Context(), o.ID); derr != nil {
				s.logger.Warn("delete the delegation of an order not recorded", "order_id", o.ID, "error", derr)
			}
		}
		s.writeError(w, r, err)
		return
	}
	status := http.StatusAccepted
	if final.Status.Terminal() {
		status = http.StatusOK
	}
	encode(w, status, toResponse(final))
}

// runbookEnv is a run's environment: the request's sanitised values, then
// the variables stage0 gave every script, which a request cannot override.
// RUNBOOK_API_TOKEN is a delegated token good only for running runbooks
// while this order runs, never the caller's own credential.
func runbookEnv(env map[string]string, token, correlation, url, stack string) map[string]string {
	out := maps.Clone(env)
	if out == nil {
		out = map[string]string{}
	}
	sys := map[string]string{
		"RUNBOOK_API_TOKEN":       token,
		"RUNBOOK_CORRELATION_ID":  correlation,
		"RUNBOOK_URL":             url,
		"RUNBOOK_RECURSION_STACK": stack,
		"RUNBOOK_H_AUTH":          "Authorization: Bearer " + token,
		"RUNBOOK_H_CORR":          "X-Correlation-Id: " + correlation,
		"RUNBOOK_H_RECUR":         "X-Recursion-Stack: " + stack,
		"RUNBOOK_H_CTYPE":         "Content-Type: application/json",
	}
	sys["RUNBOOK_HEADERS"] = strings.Join([]string{sys["RUNBOOK_H_AUTH"], sys["RUNBOOK_H_CORR"],
		sys["RUNBOOK_H_RECUR"], sys["RUNBOOK_H_CTYPE"]}, "\n")
	maps.Copy(out, sys)
	return out
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

// chain is where a run sits in a chain of sub-runbooks.
type chain struct {
	correlation string
	stack       []string // runbook files already running, outermost first
	hosts       []string // hosts running them
	delegated   bool
}

type delegationKey struct{}

// chainOf reads the chain of a request: a delegated token's binding
// (which the script cannot change), else the stage0 headers
// X-Correlation-Id and X-Recursion-Stack (a stack that is not a JSON list
// of strings is ignored, as in stage0).
func chainOf(r *http.Request) chain {
	if d, ok := r.Context().Value(delegationKey{}).(*postgres.Delegation); ok {
		return chain{correlation: d.CorrelationID, stack: d.Stack, hosts: d.Hosts, delegated: true}
	}
	c := chain{correlation: r.Header.Get("X-Correlation-Id")}
	if c.correlation == "" || len(c.correlation) > 200 || order.HasControl(c.correlation, false) {
		c.correlation = uuid.NewString()
	}
	var stack []string
	if err := json.Unmarshal([]byte(r.Header.Get("X-Recursion-Stack")), &stack); err == nil {
		c.stack = stack
	}
	return c
}

// pythonList renders names as Python prints a list of strings, as
// stage0's recursion message shows the chain: ['a.md', 'b.md'].
func pythonList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = "'" + strings.ReplaceAll(strings.ReplaceAll(n, `\`, `\\`), "'", `\'`) + "'"
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// pythonJSONList renders names as Python's json.dumps does: ", " between
// items, which is what stage0's RUNBOOK_RECURSION_STACK held.
func pythonJSONList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		b, _ := json.Marshal(n)
		q[i] = string(b)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// authenticateRunbooks is authenticate for the runbook routes, which also
// accept the delegated token of a running script: it acts for the
// principal that started the chain, bound to the chain's correlation id
// and recursion stack, and only on execute and validate.
func (s *Server) authenticateRunbooks(next http.Handler) http.Handler {
	plain := s.authenticate(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !strings.HasPrefix(tok, delegationPrefix) || s.Runbooks == nil {
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
		ctx := context.WithValue(r.Context(), principalKey{}, p)
		r = r.WithContext(context.WithValue(ctx, delegationKey{}, d))
		if r.Method != http.MethodPost && r.Method != http.MethodPatch {
			s.writeError(w, r, order.Errorf(order.CodeForbidden, "a runbook token may only execute or validate runbooks"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
