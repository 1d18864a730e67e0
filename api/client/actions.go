package client

import (
	"context"
	"net/http"
)

// Action is an action this principal may run, as GET /v1/actions shows it.
type Action struct {
	Name           string        `json:"name"`
	Title          string        `json:"title"`
	Description    string        `json:"description"`
	Kind           string        `json:"kind"`
	Command        []string      `json:"command,omitempty"`
	Verb           string        `json:"verb,omitempty"`
	Unit           string        `json:"unit,omitempty"`
	Hosts          []string      `json:"hosts"`
	RunAs          string        `json:"run_as"`
	TimeoutSeconds float64       `json:"timeout_seconds"`
	Confirm        bool          `json:"confirm"`
	Limit          *ActionLimit  `json:"limit"`
	Params         []ActionParam `json:"params"`
}

// ActionLimit is an action's run limit.
type ActionLimit struct {
	Runs              int     `json:"runs"`
	PerSeconds        float64 `json:"per_seconds"`
	ConcurrentPerHost int     `json:"concurrent_per_host"`
}

// ActionParam is one param of an action.
type ActionParam struct {
	Name        string   `json:"name"`
	Title       string   `json:"title"`
	Description string   `json:"description"`
	Type        string   `json:"type"`
	Pattern     string   `json:"pattern,omitempty"`
	Min         *int64   `json:"min"`
	Max         *int64   `json:"max"`
	Values      []string `json:"values,omitempty"`
	Default     *string  `json:"default"`
	Required    bool     `json:"required"`
	Secret      bool     `json:"secret"`
	Units       string   `json:"units,omitempty"`
}

// Actions lists the actions this principal may run.
func (c *Client) Actions(ctx context.Context) ([]Action, error) {
	var out struct {
		Actions []Action `json:"actions"`
	}
	if _, _, err := c.call(ctx, request{method: http.MethodGet, path: "/v1/actions"}, &out); err != nil {
		return nil, err
	}
	return out.Actions, nil
}

// Action is the action name and its ETag: SubmitOptions.IfMatch set to
// it runs the action only while it is still this definition.
func (c *Client) Action(ctx context.Context, name string) (*Action, string, error) {
	var a Action
	etag, err := c.getTagged(ctx, "/v1/actions/"+pathID(name), &a)
	if err != nil {
		return nil, "", err
	}
	return &a, etag, nil
}

// RunAction runs an action on host with params (strings, numbers for int
// params, booleans for bool params) and returns the order, queued or
// (with opts.Wait) finished. With opts.IdempotencyKey a retry of the same
// run returns the first run's order, marked Replayed, and runs nothing.
func (c *Client) RunAction(ctx context.Context, name, host string, params map[string]any, opts SubmitOptions) (*Order, error) {
	body := map[string]any{"host": host, "params": params}
	return c.submitTo(ctx, "/v1/actions/"+pathID(name)+"/run", body, opts)
}
