// Package client is a Go client for the orderly API (api/openapi.yaml):
// submit orders and wait for them, read and list them (with a paging
// iterator), follow their live output over Server-Sent Events with resume,
// cancel them, and read hosts, batches and runbooks. Every call takes a
// context; every refusal is an *Error carrying the API's stable error
// code. The orderly CLI is built on it.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client talks to one orderly API with one bearer token. It is safe for
// concurrent use.
type Client struct {
	base      string
	token     string
	http      *http.Client
	waitHTTP  *http.Client // for a request that asks the API to wait (Prefer: wait)
	userAgent string
	retries   int // of a 429, after its Retry-After
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client (transport, proxy, TLS). The default
// has no overall timeout, since following an order's output may take as
// long as the order, and waits at most two minutes for response headers.
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http, c.waitHTTP = h, h } }

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.userAgent = ua } }

// WithRateLimitRetries sets how many times a request refused with 429 is
// sent again after the Retry-After the API gave (default 3; 0 never); a
// Retry-After over 30 s is not waited for. The API refuses a rate-limited
// request before doing anything, so a retry is safe.
func WithRateLimitRetries(n int) Option { return func(c *Client) { c.retries = n } }

// New returns a client of the API at baseURL (http:// or https://, without
// /v1) that authenticates with token (an orderly API token or a JWT).
func New(baseURL, token string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("API URL %q is not an http:// or https:// URL", baseURL)
	}
	// Every path is asked under /v1 already: such a base answered every
	// call with a bare "no such route".
	if p := strings.TrimRight(u.Path, "/"); p == "/v1" || strings.HasSuffix(p, "/v1") {
		return nil, fmt.Errorf("API URL %q ends in /v1: give the API's base URL, without /v1", baseURL)
	}
	// net/http refuses such a header at every call, as a transport error
	// that Temporary calls worth retrying: a token read from a file with
	// its line end would have looked like an API that is down, for ever.
	if hasControl(token) {
		return nil, errors.New("the API token holds a line end or another control character (read from a file?), which cannot be sent in an Authorization header")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = responseHeaderTimeout
	// A wait may rightly take longer than that (http.max_wait is 5m by
	// default): its answer is bounded by the wait asked for instead (send).
	waiting := tr.Clone()
	waiting.ResponseHeaderTimeout = 0
	c := &Client{base: strings.TrimRight(baseURL, "/"), token: token, http: &http.Client{Transport: tr},
		waitHTTP: &http.Client{Transport: waiting}, userAgent: "orderly-client", retries: 3}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// BaseURL is the API's URL as the client uses it.
func (c *Client) BaseURL() string { return c.base }

// responseHeaderTimeout bounds how long a request waits for the API's
// answer headers: an API that accepted the connection and went silent.
var responseHeaderTimeout = 2 * time.Minute

// waitAnswerMargin is how long past the wait it asked for a request waits
// for the API's answer headers (the server caps the wait lower, or ends it
// with the order).
const waitAnswerMargin = 2 * time.Minute

// request is one API call.
type request struct {
	method string
	path   string
	query  url.Values
	body   any
	header http.Header
	accept string
	wait   time.Duration // asked of the API (Prefer: wait, in header): bounds the answer instead of the transport
}

// send performs r and returns the response when it is 2xx (or 304 to a
// request with If-None-Match); any other
// status becomes an *Error, a failure to reach the API a *TransportError.
func (c *Client) send(ctx context.Context, r request) (*http.Response, error) {
	if err := checkSendable(r); err != nil {
		return nil, err
	}
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
		accept := r.accept
		if accept == "" {
			accept = "application/json"
		}
		req.Header.Set("Accept", accept)
		req.Header.Set("User-Agent", c.userAgent)
		hc, cancel := c.http, context.CancelFunc(func() {})
		if r.wait > 0 {
			var wctx context.Context
			wctx, cancel = context.WithTimeout(ctx, r.wait+waitAnswerMargin)
			hc, req = c.waitHTTP, req.WithContext(wctx)
		}
		resp, err := hc.Do(req)
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return nil, &TransportError{URL: c.base, Err: err}
		}
		// A 304 answers only a request that asked for one (If-None-Match).
		if resp.StatusCode >= 200 && resp.StatusCode < 300 ||
			resp.StatusCode == http.StatusNotModified && r.header.Get("If-None-Match") != "" {
			resp.Body = cancelOnClose{resp.Body, cancel}
			return resp, nil
		}
		apiErr := readError(r.method, r.path, resp)
		cancel()
		if resp.StatusCode == http.StatusTooManyRequests && attempt < c.retries {
			if d, ok := retryAfter(resp.Header.Get("Retry-After")); ok {
				if err := sleep(ctx, d); err != nil {
					return nil, err
				}
				continue
			}
		}
		return nil, apiErr
	}
}

// cancelOnClose ends a request's own context once its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// call performs r, reads the whole 2xx body and decodes it into out when
// out is not nil, and returns the body.
func (c *Client) call(ctx context.Context, r request, out any) ([]byte, int, error) {
	b, status, _, err := c.callHeader(ctx, r, out)
	return b, status, err
}

// callHeader is call that also returns the answer's headers.
func (c *Client) callHeader(ctx context.Context, r request, out any) ([]byte, int, http.Header, error) {
	resp, err := c.send(ctx, r)
	if err != nil {
		return nil, 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, 0, nil, &TransportError{URL: c.base, Err: fmt.Errorf("read %s %s: %w", r.method, r.path, err)}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return nil, 0, nil, fmt.Errorf("%s %s: the API answered with something that is not the expected JSON: %v", r.method, r.path, err)
		}
	}
	return b, resp.StatusCode, resp.Header, nil
}

// getTagged GETs path, decodes its answer into out and returns the
// answer's ETag.
func (c *Client) getTagged(ctx context.Context, path string, out any) (string, error) {
	etag, _, err := c.getIfNoneMatch(ctx, path, "", out)
	return etag, err
}

// getIfNoneMatch is getTagged with If-None-Match: prev when prev is not
// "": notModified reports a 304, and out is then left as it was.
func (c *Client) getIfNoneMatch(ctx context.Context, path, prev string, out any) (etag string, notModified bool, err error) {
	r := request{method: http.MethodGet, path: path}
	if prev != "" {
		r.header = http.Header{"If-None-Match": {prev}}
	}
	b, etag, notModified, err := func() ([]byte, string, bool, error) {
		resp, err := c.send(ctx, r)
		if err != nil {
			return nil, "", false, err
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusNotModified {
			return nil, prev, true, nil
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, "", false, &TransportError{URL: c.base, Err: fmt.Errorf("read GET %s: %w", path, err)}
		}
		return b, resp.Header.Get("ETag"), false, nil
	}()
	if err != nil || notModified {
		return etag, notModified, err
	}
	if err := json.Unmarshal(b, out); err != nil {
		return "", false, fmt.Errorf("GET %s: the API answered with something that is not the expected JSON: %v", path, err)
	}
	return etag, false, nil
}

// readError turns a non-2xx response into an *Error and closes its body.
func readError(method, path string, resp *http.Response) error {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var env struct {
		Error ErrorDetail `json:"error"`
	}
	if json.Unmarshal(b, &env) == nil && env.Error.Message != "" {
		return &Error{Status: resp.StatusCode, Code: env.Error.Code, Message: env.Error.Message, Details: env.Error.Details}
	}
	snippet := strings.TrimSpace(string(b))
	if len(snippet) > 200 {
		snippet = snippet[:200] + "…"
	}
	if snippet != "" {
		snippet = ": " + snippet
	}
	return &Error{Status: resp.StatusCode, Code: Code("http_" + strconv.Itoa(resp.StatusCode)),
		Message: fmt.Sprintf("%s %s answered %s%s", method, path, resp.Status, snippet)}
}

// maxRetryAfter is the longest Retry-After a client waits out: a 429
// asking for more (an action's limit, `runs` per minutes) is returned at
// once, since a retry any sooner would only be refused again.
const maxRetryAfter = 30 * time.Second

// retryAfter reads a Retry-After header in seconds (or an HTTP date), and
// whether it is short enough to wait for.
func retryAfter(v string) (time.Duration, bool) {
	d := time.Second
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n >= 0 {
		if n > int(maxRetryAfter/time.Second) {
			return 0, false
		}
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = time.Until(t)
	}
	return max(d, 100*time.Millisecond), d <= maxRetryAfter
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pathID escapes an id for a path segment; the API judges what it is.
func pathID(id string) string { return url.PathEscape(id) }
