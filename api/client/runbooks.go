package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// RunbookProblem is why a runbook cannot run, with a stable code.
type RunbookProblem struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Runbook is a runbook of runbooks.dir as GET /v1/runbooks lists it.
type Runbook struct {
	File     string           `json:"file"`
	Name     string           `json:"name"`
	SHA256   string           `json:"sha256"`
	Valid    bool             `json:"valid"`
	Problems []RunbookProblem `json:"problems"`
	Warnings []string         `json:"warnings"`
}

// Runbooks lists the runbooks, with whether each can run.
func (c *Client) Runbooks(ctx context.Context) ([]Runbook, error) {
	var out struct {
		Runbooks []Runbook `json:"runbooks"`
	}
	if _, _, err := c.call(ctx, request{method: http.MethodGet, path: "/v1/runbooks"}, &out); err != nil {
		return nil, err
	}
	return out.Runbooks, nil
}

// RunbookRequest is the body of a runbook run: every field is optional.
// EnvVars values are strings, numbers, booleans or nil.
type RunbookRequest struct {
	EnvVars        map[string]any `json:"env_vars,omitempty"`
	Host           string         `json:"host,omitempty"`
	TimeoutSeconds float64        `json:"timeout_seconds,omitempty"`
	RunAs          string         `json:"run_as,omitempty"`
}

// RunbookEnvVar is a variable a runbook declares in its Environment
// Requirements: a run must send it in EnvVars.
type RunbookEnvVar struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

// RunbookClaim is one of a runbook's Required Claims: the principal must
// hold the claim with one of the Allowed values.
type RunbookClaim struct {
	Name    string   `json:"name"`
	Allowed []string `json:"allowed"`
}

// RunbookDetail is a runbook as GET /v1/runbooks/{name} shows it: its
// summary, the file's text and its parsed sections.
type RunbookDetail struct {
	Runbook
	Content  string            `json:"content"`
	Env      []RunbookEnvVar   `json:"env"`
	Inputs   []string          `json:"inputs"`
	Claims   []RunbookClaim    `json:"claims"`
	Script   string            `json:"script"`
	Sections map[string]string `json:"sections"`

	// Raw is the answer's JSON as the API sent it.
	Raw json.RawMessage `json:"-"`
}

// Runbook is the runbook file and its ETag: SubmitOptions.IfMatch set
// to it runs the runbook only while it is still what this answer showed.
func (c *Client) Runbook(ctx context.Context, file string) (*RunbookDetail, string, error) {
	var raw json.RawMessage
	etag, err := c.getTagged(ctx, "/v1/runbooks/"+pathID(file), &raw)
	if err != nil {
		return nil, "", err
	}
	rb := &RunbookDetail{}
	if err := json.Unmarshal(raw, rb); err != nil {
		return nil, "", fmt.Errorf("GET /v1/runbooks/%s: the API answered with something that is not the expected JSON: %v", pathID(file), err)
	}
	rb.Raw = raw
	return rb, etag, nil
}

// RunbookValidation is the answer of a validate that found nothing
// wrong: the run would be accepted, with these warnings.
type RunbookValidation struct {
	File     string   `json:"file"`
	Valid    bool     `json:"valid"`
	Warnings []string `json:"warnings"`
	// Raw is the answer's JSON as the API sent it.
	Raw json.RawMessage `json:"-"`
}

// ValidateRunbook judges a run of the runbook with req for this
// principal, as ExecuteRunbook would, and runs nothing. A refusal is an
// *Error: CodeForbidden when the principal lacks the Required Claims,
// CodeUnprocessable with every problem (RunbookProblems) when the
// runbook, its files or req would not run.
func (c *Client) ValidateRunbook(ctx context.Context, file string, req RunbookRequest) (*RunbookValidation, error) {
	var v RunbookValidation
	raw, _, err := c.call(ctx, request{method: http.MethodPost, path: "/v1/runbooks/" + pathID(file) + "/validate", body: req}, &v)
	if err != nil {
		return nil, err
	}
	v.Raw = raw
	return &v, nil
}

// RunbookProblems are the problems a refusal of ValidateRunbook or
// ExecuteRunbook lists (details.problems of a 422), each with its stable
// code; nil when err is no such refusal.
func RunbookProblems(err error) []RunbookProblem {
	var e *Error
	if !errors.As(err, &e) || e.Details == nil {
		return nil
	}
	list, _ := e.Details["problems"].([]any)
	var out []RunbookProblem
	for _, p := range list {
		m, _ := p.(map[string]any)
		code, _ := m["code"].(string)
		msg, _ := m["message"].(string)
		if code != "" || msg != "" {
			out = append(out, RunbookProblem{Code: code, Message: msg})
		}
	}
	return out
}

// RunbookHistoryOptions page through a runbook's runs.
type RunbookHistoryOptions struct {
	// Limit is the page size (1-1000; 0 is the server's, 50).
	Limit int
	// Cursor is a page's NextCursor, to read the page after it.
	Cursor string
	// WithoutOutputs asks for the runs without their outputs' contents,
	// as ListOptions.WithoutOutputs does.
	WithoutOutputs bool
}

// RunbookHistory reads one page of the runbook's runs as orders, newest
// first, refused ones included (a principal sees its own runs unless it
// sees every order).
func (c *Client) RunbookHistory(ctx context.Context, file string, opts RunbookHistoryOptions) (*OrderList, error) {
	return c.listPage(ctx, "/v1/runbooks/"+pathID(file)+"/history",
		ListOptions{Limit: opts.Limit, Cursor: opts.Cursor, WithoutOutputs: opts.WithoutOutputs})
}

// ExecuteRunbook runs a runbook as an order of kind script and returns the
// order, queued or (with opts.Wait) finished; Follow streams its output.
// With opts.IdempotencyKey a retry of the same run (the same runbook and
// request) returns the first run's order, marked Replayed, instead of
// running it again.
func (c *Client) ExecuteRunbook(ctx context.Context, file string, req RunbookRequest, opts SubmitOptions) (*Order, error) {
	return c.submitTo(ctx, "/v1/runbooks/"+pathID(file)+"/execute", req, opts)
}

// submitTo posts a body that becomes one order, with the submission
// headers, and decodes the order, marked Replayed as the answer is.
func (c *Client) submitTo(ctx context.Context, path string, body any, opts SubmitOptions) (*Order, error) {
	var o Order
	opts = opts.within(ctx)
	_, _, hdr, err := c.callHeader(ctx, request{method: http.MethodPost, path: path, body: body, header: opts.header(), wait: opts.Wait}, &o)
	if err != nil {
		return nil, err
	}
	o.Replayed = hdr.Get("Idempotent-Replayed") == "true"
	return &o, nil
}
