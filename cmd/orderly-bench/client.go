package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

type client struct {
	base, token string
	hc          *http.Client
}

func newClient(base, token string, conns int) *client {
	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, DisableCompression: true,
		IdleConnTimeout: time.Minute}
	return &client{base: base, token: token, hc: &http.Client{Transport: tr, Timeout: 3 * time.Minute}}
}

func (c *client) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// doTimed is do that also returns when the response headers arrived.
// getJSON GETs path and decodes a 200 answer into v.
func (c *client) getJSON(ctx context.Context, path string, v any) error {
	code, b, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", path, code, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, v)
}

func (c *client) doTimed(ctx context.Context, method, path string, body []byte) (int, []byte, time.Duration, error) {
	t := time.Now()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, 0, err
	}
	headers := time.Since(t)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, headers, err
}

type orderResp struct {
	ID          string     `json:"id"`
	Status      string     `json:"status"`
	SubmittedAt time.Time  `json:"submitted_at"`
	StartedAt   *time.Time `json:"started_at"`
	FinishedAt  *time.Time `json:"finished_at"`
	Result      *struct {
		ExitCode   *int  `json:"exit_code"`
		DurationMS int64 `json:"duration_ms"`
		Stdout     struct {
			Bytes     int64  `json:"bytes"`
			Truncated bool   `json:"truncated"`
			SHA256    string `json:"sha256"`
		} `json:"stdout"`
	} `json:"result"`
}

func orderBody(host, command string, args ...string) []byte {
	b, _ := json.Marshal(map[string]any{"host": host, "command": command, "args": args})
	return b
}

func (c *client) submit(ctx context.Context, body []byte, query string) (int, *orderResp, error) {
	code, b, err := c.do(ctx, http.MethodPost, "/v1/orders"+query, body)
	if err != nil {
		return code, nil, err
	}
	if code != http.StatusOK && code != http.StatusAccepted {
		return code, nil, fmt.Errorf("POST /v1/orders%s: %d %s", query, code, bytes.TrimSpace(b))
	}
	var o orderResp
	if err := json.Unmarshal(b, &o); err != nil {
		return code, nil, fmt.Errorf("decode order: %w", err)
	}
	return code, &o, nil
}

func warmUp(ctx context.Context, c *client, host string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, o, err := c.submit(ctx, orderBody(host, "true"), "?wait=10")
		if err == nil && o.Status == "succeeded" {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("warm-up order ended %s", o.Status)
			}
			return fmt.Errorf("warm-up: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
