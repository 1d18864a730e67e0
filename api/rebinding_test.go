package api_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/testenv"
)

// browserPost posts body to target with the Host header host and the
// headers hdr (name, value pairs), and returns the status and body.
func browserPost(t *testing.T, target, host, body string, hdr ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testenv.Context(t), http.MethodPost, target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestNoCredentialSurfacesRefuseBrowsersByName: a page of another site
// whose name was rebound in DNS to the API's address (DNS rebinding) is
// same-origin to the browser, which sends its requests from inside
// acl.allow with Sec-Fetch-Site: same-origin and an Origin that is the
// request's Host, and lets the page read the answers. httpexec ran its
// command, and a loopback serve's /dev-login handed it a token with the
// admin role. A browser's request under a DNS name other than localhost
// is now refused on both (and audited); under an IP address or localhost
// it is served as before, and a script's by any name.
func TestNoCredentialSurfacesRefuseBrowsersByName(t *testing.T) {
	hx := newHTTPExecSurface(t, envOptions{})
	u, err := url.Parse(hx.url)
	if err != nil {
		t.Fatal(err)
	}
	rebound := "rebind.attacker.example:" + u.Port()
	sameOrigin := func(host string) []string {
		return []string{"Sec-Fetch-Site", "same-origin", "Sec-Fetch-Mode", "cors", "Origin", "http://" + host}
	}
	for _, hdr := range [][]string{
		sameOrigin(rebound),
		{"Origin", "http://" + rebound}, // an older browser: no Sec-Fetch-Site
		sameOrigin("REBIND.attacker.example.:" + u.Port()),
	} {
		if code, b := browserPost(t, hx.url+"/echo", hdr[len(hdr)-1][len("http://"):], `{"args":["rebound"]}`, hdr...); code != http.StatusForbidden {
			t.Errorf("httpexec, a browser's POST by name %v: %d %s, want 403", hdr, code, b)
		}
	}
	if got := sourceStatuses(t, hx.apiEnv, "httpexec"); len(got) != 0 {
		t.Errorf("requests by name made orders: %v", got)
	}
	var n int
	if err := hx.pool.QueryRow(t.Context(), `SELECT count(*) FROM rejections WHERE source = 'httpexec' AND status = 403 AND reason ILIKE '%rebind.attacker%'`).Scan(&n); err != nil || n != 3 {
		t.Errorf("audited refusals by name: %d, %v", n, err)
	}
	for _, c := range []struct {
		host string
		hdr  []string
	}{
		{"localhost:" + u.Port(), sameOrigin("localhost:" + u.Port())},
		{u.Host, sameOrigin(u.Host)},
		{"[::1]:" + u.Port(), sameOrigin("[::1]:" + u.Port())},
		{rebound, nil}, // a script, by any name
	} {
		if code, b := browserPost(t, hx.url+"/echo", c.host, `{"args":["ok"]}`, c.hdr...); code != http.StatusOK {
			t.Errorf("httpexec, a POST for %s with %v: %d %s, want 200", c.host, c.hdr, code, b)
		}
	}

	e := newAPIEnv(t, envOptions{})
	stage0URL := serveStage0(t, e, t.TempDir())
	s0, err := url.Parse(stage0URL)
	if err != nil {
		t.Fatal(err)
	}
	const mint = `{"subject":"mallory","roles":["admin"]}`
	name := "rebind.attacker.example:" + s0.Port()
	if code, b := browserPost(t, stage0URL+"/dev-login", name, mint, sameOrigin(name)...); code != http.StatusForbidden || strings.Contains(b, "access_token") {
		t.Errorf("dev-login, a browser's POST by name: %d %s, want 403 and no token", code, b)
	}
	local := "localhost:" + s0.Port()
	if code, b := browserPost(t, stage0URL+"/dev-login", local, mint, sameOrigin(local)...); code != http.StatusOK || !strings.Contains(b, "access_token") {
		t.Errorf("dev-login, a browser's POST for localhost: %d %s, want 200 and a token", code, b)
	}
}
