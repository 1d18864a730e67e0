package main

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
)

// TestStackServesUI: the API as the commands wire it serves the web UI:
// the sign-in page, the embedded htmx, and a session from the admin token.
func TestStackServesUI(t *testing.T) {
	s := newStack(t)
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	get := func(path string) (int, string) {
		resp, err := c.Get(s.url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/ui/")
	if code != http.StatusOK || !strings.Contains(body, `id="token"`) {
		t.Fatalf("GET /ui/ = %d, not the sign-in page", code)
	}
	if code, body := get("/ui/static/htmx.min.js"); code != http.StatusOK || !strings.Contains(body, `version:"2.0.11"`) {
		t.Fatalf("htmx: %d", code)
	}
	_, after, _ := strings.Cut(body, `name="signin" value="`)
	nonce, _, _ := strings.Cut(after, `"`)
	resp, err := c.PostForm(s.url+"/ui/signin", url.Values{"signin": {nonce}, "token": {s.token}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `id="exec-form"`) {
		t.Fatalf("sign in with the admin token: %d\n%s", resp.StatusCode, b)
	}
}
