package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/orderly-run/orderly/api"
)

// apiClient talks HTTP to the orderly API with a bearer token.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

func newAPIClient(base, token string, getenv func(string) string) *apiClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = proxyFrom(getenv)
	tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	tr.ResponseHeaderTimeout = 2 * time.Minute
	return &apiClient{base: base, token: token, http: &http.Client{Transport: tr}}
}

// apiError is the API's error envelope. It prints as
// "<message> (<code>)", which main prefixes with "orderly: ".
type apiError struct {
	Status  int
	Code    string
	Message string
	Details map[string]any
}

func (e *apiError) Error() string { return fmt.Sprintf("%s (%s)", e.Message, e.Code) }

// transportError says the API could not be reached at all.
type transportError struct {
	base string
	err  error
}

func (e *transportError) Error() string {
	return fmt.Sprintf("cannot reach the orderly API at %s: %v (is it running? set --url or ORDERLY_URL)", e.base, e.err)
}

func (e *transportError) Unwrap() error { return e.err }

// request is one API call.
type request struct {
	method string
	path   string
	query  url.Values
	body   any
	header http.Header
	accept string
}

// send performs r and returns the response when it is 2xx; any other
// status becomes an *apiError (or a plain error for a non-API answer).
// A 429 is retried after its Retry-After, a few times: the API refuses
// rate-limited requests before doing anything, so a retry is safe.
func (c *apiClient) send(ctx context.Context, r request) (*http.Response, error) {
	var body []byte
	if r.body != nil {
		var err error
		if body, err = json.Marshal(r.body); err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
	}
	u := c.base + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, r.method, u, bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("build request: %w", err)
		}
		if body == nil {
			req.Body, req.GetBody, req.ContentLength = http.NoBody, nil, 0
		} else {
			req.Header.Set("Content-Type", "application/json")
		}
		for k, vs := range r.header {
			req.Header[k] = vs
		}
		req.Header.Set("Authorization", "Bearer "+c.token)
		req.Header.Set("Accept", firstNonEmpty(r.accept, "application/json"))
		req.Header.Set("User-Agent", "orderly-cli/"+version)
		resp, err := c.http.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return nil, &transportError{base: c.base, err: err}
		}
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			return resp, nil
		}
		apiErr := readError(r.method, r.path, resp)
		if resp.StatusCode == http.StatusTooManyRequests && attempt < 3 {
			if err := sleepCtx(ctx, retryAfter(resp.Header.Get("Retry-After"))); err != nil {
				return nil, err
			}
			continue
		}
		return nil, apiErr
	}
}

// call performs r, reads the whole 2xx body and decodes it into out when
// out is not nil. It returns the raw body for --json output.
func (c *apiClient) call(ctx context.Context, r request, out any) ([]byte, error) {
	resp, err := c.send(ctx, r)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, &transportError{base: c.base, err: fmt.Errorf("read %s %s: %w", r.method, r.path, err)}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return nil, fmt.Errorf("%s %s: the API answered with something that is not the expected JSON: %v", r.method, r.path, err)
		}
	}
	return b, nil
}

// readError turns a non-2xx response into an error and closes its body.
func readError(method, path string, resp *http.Response) error {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var env api.ErrorBody
	if json.Unmarshal(b, &env) == nil && env.Error.Message != "" {
		return &apiError{Status: resp.StatusCode, Code: string(env.Error.Code), Message: env.Error.Message, Details: env.Error.Details}
	}
	snippet := strings.TrimSpace(string(b))
	if len(snippet) > 200 {
		snippet = snippet[:200] + "…"
	}
	if snippet != "" {
		snippet = ": " + snippet
	}
	return &apiError{Status: resp.StatusCode, Code: "http_" + strconv.Itoa(resp.StatusCode),
		Message: fmt.Sprintf("%s %s answered %s%s", method, path, resp.Status, snippet)}
}

// retryAfter reads a Retry-After header in seconds (or an HTTP date),
// bounded so a hostile answer cannot stall the client for long.
func retryAfter(v string) time.Duration {
	d := time.Second
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n >= 0 {
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = time.Until(t)
	}
	return min(max(d, 100*time.Millisecond), 30*time.Second)
}

// temporary reports errors worth retrying while waiting for an order:
// the API briefly unreachable or one of its dependencies down.
func temporary(err error) bool {
	var te *transportError
	if errors.As(err, &te) {
		return true
	}
	var ae *apiError
	if errors.As(err, &ae) {
		switch ae.Status {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
	}
	return false
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// isStatus reports whether err is an API answer with one of the statuses.
func isStatus(err error, statuses ...int) bool {
	var ae *apiError
	if !errors.As(err, &ae) {
		return false
	}
	for _, s := range statuses {
		if ae.Status == s {
			return true
		}
	}
	return false
}

// proxyFrom is http.ProxyFromEnvironment over the environment run() was
// given rather than the process's: HTTPS_PROXY / HTTP_PROXY (or their
// lower-case forms) and NO_PROXY ("*", host names, .domain suffixes).
// Loopback addresses are never proxied.
func proxyFrom(getenv func(string) string) func(*http.Request) (*url.URL, error) {
	get := func(name string) string { return firstNonEmpty(getenv(name), getenv(strings.ToLower(name))) }
	noProxy := get("NO_PROXY")
	return func(req *http.Request) (*url.URL, error) {
		raw := get("HTTP_PROXY")
		if req.URL.Scheme == "https" {
			raw = get("HTTPS_PROXY")
		}
		host := req.URL.Hostname()
		if raw == "" || host == "localhost" {
			return nil, nil
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			return nil, nil
		}
		for _, np := range strings.Split(noProxy, ",") {
			np = strings.TrimSpace(np)
			if np == "*" || (np != "" && (host == strings.TrimPrefix(np, ".") || strings.HasSuffix(host, "."+strings.TrimPrefix(np, ".")))) {
				return nil, nil
			}
		}
		if !strings.Contains(raw, "://") {
			raw = "http://" + raw
		}
		u, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("invalid proxy address %q: %w", raw, err)
		}
		return u, nil
	}
}
