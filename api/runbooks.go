package api

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/runbook"
)

// RunbookStore is what the runbook endpoints keep in PostgreSQL besides
// orders: the delegated tokens of running scripts, and refused runs.
type RunbookStore interface {
	InsertDelegation(ctx context.Context, token string, d postgres.Delegation) error
	DeleteDelegation(ctx context.Context, orderID uuid.UUID) error
	LookupDelegation(ctx context.Context, token string) (*postgres.Delegation, error)
	RecordRefusedRun(ctx context.Context, o *order.Order, reason string) error
}

// RunbookDeps wire /v1/runbooks (docs/runbooks.md). Config is read per
// request, so a reload applies at once.
type RunbookDeps struct {
	Config func() config.Runbooks
	Store  RunbookStore

	mu      sync.Mutex
	sources map[string]*runbook.Source // by directory, each with its parse cache
}

// source returns the runbook source of the configured directory, or a
// not-found error when runbooks are off.
func (s *Server) runbookSource() (*runbook.Source, config.Runbooks, error) {
	d := s.Runbooks
	if d == nil {
		return nil, config.Runbooks{}, notFound("runbooks are not configured (runbooks.dir)")
	}
	cfg := d.Config()
	if cfg.Dir == "" {
		return nil, cfg, notFound("runbooks are not configured (runbooks.dir)")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if src := d.sources[cfg.Dir]; src != nil {
		return src, cfg, nil
	}
	src, err := runbook.NewSource(cfg.Dir)
	if err != nil {
		return nil, cfg, &order.Error{Code: order.CodeUnavailable, Message: "the runbook directory cannot be read", Err: err}
	}
	if d.sources == nil {
		d.sources = map[string]*runbook.Source{}
	}
	d.sources[cfg.Dir] = src
	return src, cfg, nil
}

// pathRunbook loads the runbook named by the {name} path parameter.
func (s *Server) pathRunbook(r *http.Request) (*runbook.Runbook, *runbook.Source, config.Runbooks, error) {
	name, err := runbookName(r)
	if err != nil {
		return nil, nil, config.Runbooks{}, err
	}
	return s.loadRunbook(name)
}

// runbookName is the {name} path parameter, decoded. chi matches the
// escaped path when the request has one (URL.RawPath, set when the client
// escaped more than Go would, as a%3Bb.md), and its parameters are then
// still escaped; a bad escape names no runbook.
func runbookName(r *http.Request) (string, error) {
	name := chi.URLParam(r, "name")
	if r.URL.RawPath == "" {
		return name, nil
	}
	decoded, err := url.PathUnescape(name)
	if err != nil {
		return "", notFound("Runbook not found: " + printableName(name))
	}
	return decoded, nil
}

// loadRunbook loads the runbook file name of runbooks.dir.
func (s *Server) loadRunbook(name string) (*runbook.Runbook, *runbook.Source, config.Runbooks, error) {
	src, cfg, err := s.runbookSource()
	if err != nil {
		return nil, nil, cfg, err
	}
	rb, err := src.Load(name)
	if errors.Is(err, runbook.ErrNotFound) {
		return nil, nil, cfg, runbookNotFound(src, name)
	}
	if err != nil {
		return nil, nil, cfg, &order.Error{Code: order.CodeUnprocessable, Message: "the runbook cannot be read", Err: err}
	}
	return rb, src, cfg, nil
}

// runbookNotFound is the 404 for name, which names no runbook of src;
// when name is a runbook's file without its .md (Hello for Hello.md, as
// `orderly runbook run Hello`), it names the file.
func runbookNotFound(src *runbook.Source, name string) error {
	msg := "Runbook not found: " + printableName(name)
	if !strings.HasSuffix(name, ".md") {
		if _, err := src.Load(name + ".md"); err == nil {
			msg += " (a runbook is named by its file: " + printableName(name+".md") + ")"
		}
	}
	return notFound(msg)
}

func printableName(s string) string {
	if len(s) > 128 {
		s = s[:128] + "…"
	}
	b := []rune{}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			r = '?'
		}
		b = append(b, r)
	}
	return string(b)
}

// RunbookSummary is one runbook in a list.
type RunbookSummary struct {
	File     string            `json:"file"`
	Name     string            `json:"name"`
	SHA256   string            `json:"sha256"`
	Valid    bool              `json:"valid"`
	Problems []runbook.Problem `json:"problems"`
	Warnings []string          `json:"warnings"`
}

// RunbookView is a runbook with its parsed sections.
type RunbookView struct {
	RunbookSummary
	Content  string            `json:"content"`
	Env      []runbook.EnvVar  `json:"env"`
	Inputs   []string          `json:"inputs"`
	Claims   []runbook.Claim   `json:"claims"`
	Script   string            `json:"script"`
	Sections map[string]string `json:"sections"`
}

// summaryOf is rb with the problems of its text, of its input files and of
// the variables it declares (as validate finds them, without a request's
// env_vars or claims), so a runbook listed valid is one validate accepts.
func (s *Server) summaryOf(rb *runbook.Runbook, src *runbook.Source, cfg config.Runbooks) RunbookSummary {
	problems := append(slices.Clone(rb.Problems), src.CheckInputs(rb, cfg.MaxInputBytes)...)
	problems = append(problems, s.RunbookEnvRefused(rb, nil)...)
	return RunbookSummary{File: rb.File, Name: rb.Name, SHA256: rb.SHA256, Valid: len(problems) == 0,
		Problems: nonNilList(problems), Warnings: nonNilList(rb.Warnings)}
}

func nonNilList[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// handleRunbookList is GET /v1/runbooks: every *.md file of runbooks.dir,
// with whether it can run.
func (s *Server) handleRunbookList(w http.ResponseWriter, r *http.Request) {
	src, cfg, err := s.runbookSource()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	list, err := src.List()
	if err != nil {
		s.writeError(w, r, &order.Error{Code: order.CodeUnavailable, Message: "the runbook directory cannot be read", Err: err})
		return
	}
	out := make([]RunbookSummary, len(list))
	for i, rb := range list {
		out[i] = s.summaryOf(rb, src, cfg)
	}
	encode(w, http.StatusOK, map[string]any{"runbooks": out})
}

// handleRunbookGet is GET /v1/runbooks/{name}: the file's text and its
// parsed sections. History is the runbook's orders (…/history), never a
// part of the file that the service writes.
func (s *Server) handleRunbookGet(w http.ResponseWriter, r *http.Request) {
	rb, src, cfg, err := s.pathRunbook(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	v := s.viewOfRunbook(rb, src, cfg)
	if s.notModified(w, r, etagOf(v)) { // the tag a run's If-Match names (ifmatch.go)
		return
	}
	encode(w, http.StatusOK, v)
}

// viewOfRunbook is rb as GET /v1/runbooks/{name} shows it.
func (s *Server) viewOfRunbook(rb *runbook.Runbook, src *runbook.Source, cfg config.Runbooks) RunbookView {
	return RunbookView{RunbookSummary: s.summaryOf(rb, src, cfg), Content: string(rb.Text),
		Env: nonNilList(rb.Env), Inputs: nonNilList(rb.Inputs), Claims: nonNilList(rb.Claims), Script: rb.Script,
		Sections: rb.Sections}
}

// handleRunbookEnv is GET /v1/runbooks/{name}/required-env. A run gets
// only the variables its request sends (never the service's own), so the
// list is what a request must send.
func (s *Server) handleRunbookEnv(w http.ResponseWriter, r *http.Request) {
	rb, _, _, err := s.pathRunbook(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	encode(w, http.StatusOK, map[string]any{"file": rb.File, "required": nonNilList(rb.Env)})
}

// RunbookRequest is the body of validate and execute; every field is
// optional.
type RunbookRequest struct {
	EnvVars        map[string]json.RawMessage `json:"env_vars"`
	Host           string                     `json:"host"`
	TimeoutSeconds float64                    `json:"timeout_seconds"`
	RunAs          string                     `json:"run_as"`
}

// check refuses what the order of a run would be refused for, whatever
// the runbook: validate ("the run would be accepted") judged only env_vars,
// and said yes to timeout_seconds -1 or run_as "no body" that execute
// refuses. A timeout under a nanosecond became 0 on execute, the default
// (runbooks.timeout), where POST /v1/orders refuses it: it is refused as
// order.Validate refuses a timeout under its millisecond.
func (req *RunbookRequest) check() error {
	switch t := req.TimeoutSeconds; {
	case t < 0 || math.IsNaN(t):
		return order.FieldError(order.CodeInvalid, "timeout_seconds", "timeout_seconds must not be negative")
	case t > 1e7:
		return order.FieldError(order.CodeUnprocessable, "timeout_seconds", "timeout_seconds is too large")
	case t > 0 && t < 0.001:
		return order.FieldError(order.CodeInvalid, "timeout_seconds", "timeout_seconds must be at least 0.001")
	}
	if req.Host != "" {
		if err := order.CheckHost(req.Host); err != nil {
			return err
		}
	}
	if req.RunAs != "" && !order.ValidUser(req.RunAs) {
		return order.FieldError(order.CodeInvalid, "run_as", "run_as is not a valid user name")
	}
	return nil
}

// readRunbookRequest decodes the optional body.
func (s *Server) readRunbookRequest(r *http.Request) (RunbookRequest, map[string]string, error) {
	var req RunbookRequest
	if err := decodeOptional(r, s.Settings().MaxBodyBytes, &req); err != nil {
		return req, nil, err
	}
	if err := req.check(); err != nil {
		return req, nil, err
	}
	env, err := runbook.Sanitize(req.EnvVars)
	if err != nil {
		return req, nil, order.FieldError(order.CodeInvalid, "env_vars", "%s", err.Error())
	}
	return req, env, nil
}

// claimsOf is what a principal holds for Required Claims: a JWT's claims,
// with roles as the principal's parsed roles (so a static token's roles
// count too, and a comma-separated roles claim is split as stage0 did).
func claimsOf(p auth.Principal) map[string][]string {
	out := make(map[string][]string, len(p.Claims)+1)
	for k, v := range p.Claims {
		out[k] = v
	}
	out["roles"] = p.Roles
	return out
}

// handleRunbookValidate is POST (or PATCH, as stage0) /v1/runbooks/{name}/validate:
// the runbook as it would run with this request's env_vars, for this
// principal. 200 when it would run; 403 when the principal lacks its
// Required Claims; 422 with every problem otherwise.
func (s *Server) handleRunbookValidate(w http.ResponseWriter, r *http.Request) {
	rb, src, cfg, err := s.pathRunbook(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	_, env, err := s.readRunbookRequest(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if msg := rb.CheckClaims(runbook.OpValidate, claimsOf(principalOf(r))); msg != "" {
		s.writeError(w, r, &order.Error{Code: order.CodeForbidden, Message: msg, Details: map[string]any{"reason": "runbook_claims"}})
		return
	}
	if problems := append(src.Check(rb, env, cfg.MaxInputBytes), s.RunbookEnvRefused(rb, env)...); len(problems) > 0 {
		s.writeError(w, r, invalidRunbook(rb, problems))
		return
	}
	encode(w, http.StatusOK, map[string]any{"file": rb.File, "valid": true, "warnings": nonNilList(rb.Warnings)})
}

// RunbookEnvRefused is a problem for each variable that rb declares or env
// sets and that the intake would refuse in an order (worker.env_deny,
// worker.env_allow), so that validate, the list and execute agree: without
// it a runbook needing PATH was listed valid and could never run.
func (s *Server) RunbookEnvRefused(rb *runbook.Runbook, env map[string]string) []runbook.Problem {
	names := make(map[string]bool, len(rb.Env)+len(env))
	for _, v := range rb.Env {
		names[v.Name] = true
	}
	for name := range env {
		names[name] = true
	}
	var problems []runbook.Problem
	for _, name := range slices.Sorted(maps.Keys(names)) {
		o := &order.Order{Kind: order.KindScript, Env: map[string]string{name: ""}}
		if err := s.Intake.Screen(o); err != nil {
			msg := err.Error()
			var oe *order.Error
			if errors.As(err, &oe) {
				msg = oe.Message
			}
			problems = append(problems, runbook.Problem{Code: runbook.CodeEnvRefused, Message: msg})
		}
	}
	return problems
}

// invalidRunbook is the refusal of a runbook with problems: the first
// one's message, and all of them with their codes in details.
func invalidRunbook(rb *runbook.Runbook, problems []runbook.Problem) error {
	return &order.Error{Code: order.CodeUnprocessable, Message: problems[0].Message,
		Details: map[string]any{"reason": "runbook_invalid", "file": rb.File, "problems": problems,
			"warnings": nonNilList(rb.Warnings)}}
}
