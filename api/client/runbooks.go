package client

import (
	"context"
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

// Runbook is the runbook file and its ETag: SubmitOptions.IfMatch set
// to it runs the runbook only while it is still what this answer showed.
func (c *Client) Runbook(ctx context.Context, file string) (*Runbook, string, error) {
	var rb Runbook
	etag, err := c.getTagged(ctx, "/v1/runbooks/"+pathID(file), &rb)
	if err != nil {
		return nil, "", err
	}
	return &rb, etag, nil
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
