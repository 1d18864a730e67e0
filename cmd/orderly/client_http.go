package main

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/orderly-run/orderly/api/client"
)

// apiError is the API's refusal as the client package reports it; it
// prints as "<message> (<code>)", which main prefixes with "orderly: ".
type apiError = client.Error

// newHTTPClient is the CLI's HTTP client: proxies from the environment
// run() was given, bounded dialing and response headers, and no overall
// timeout (following an order takes as long as the order).
func newHTTPClient(getenv func(string) string) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = proxyFrom(getenv)
	tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	tr.ResponseHeaderTimeout = 2 * time.Minute
	return &http.Client{Transport: tr}
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
