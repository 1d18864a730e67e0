package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunbookNamedWithoutItsFileSaysTheFile: a runbook is named by its
// file, and `orderly runbook run Hello` (or a request for
// /v1/runbooks/Hello) answered a bare "Runbook not found: Hello" though
// Hello.md is there. Now the 404 names the file; a name that is no
// runbook either way is answered as before, and the stage0 surface keeps
// stage0's exact message.
func TestRunbookNamedWithoutItsFileSaysTheFile(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"h1"}})
	dir := t.TempDir()
	fence := "```"
	book := "# Hello\n\n# Environment Requirements\n" + fence + "yaml\n{}\n" + fence + "\n\n" +
		"# File System Requirements\n" + fence + "yaml\nInput: []\n" + fence + "\n\n" +
		"# Script\n" + fence + "sh\necho hello\n" + fence + "\n\n# History\n"
	if err := os.WriteFile(filepath.Join(dir, "Hello.md"), []byte(book), 0o644); err != nil {
		t.Fatal(err)
	}
	rb := e.stage0Server(dir)
	for _, c := range []struct{ method, path, want string }{
		{"GET", "/v1/runbooks/Hello", "Runbook not found: Hello (a runbook is named by its file: Hello.md)"},
		{"GET", "/v1/runbooks/Hello/required-env", "named by its file: Hello.md"},
		{"POST", "/v1/runbooks/Hello/validate", "named by its file: Hello.md"},
		{"POST", "/v1/runbooks/Hello/execute", "named by its file: Hello.md"},
		{"GET", "/v1/runbooks/Hello/history", "named by its file: Hello.md"},
		{"GET", "/v1/runbooks/Nope", "Runbook not found: Nope"},
	} {
		var body any
		if c.method == "POST" {
			body = map[string]any{}
		}
		code, b := rb.do("alice", c.method, c.path, body)
		var got struct {
			Error struct{ Code, Message string }
		}
		if err := json.Unmarshal(b, &got); err != nil || code != http.StatusNotFound || got.Error.Code != "not_found" ||
			!strings.HasPrefix(got.Error.Message, "Runbook not found: ") || !strings.Contains(got.Error.Message, c.want) {
			t.Errorf("%s %s: %d %s, want 404 not_found saying %q", c.method, c.path, code, b, c.want)
		}
		if strings.Contains(c.path, "Nope") && strings.Contains(got.Error.Message, "named by its file") {
			t.Errorf("%s %s: %s names a file that is not there", c.method, c.path, b)
		}
	}

	code, b := rb.do("", "POST", "/dev-login", map[string]any{"subject": "boss", "roles": []string{"admin"}})
	var login struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(b, &login); code != http.StatusOK || err != nil {
		t.Fatalf("dev-login: %d %s", code, b)
	}
	req, _ := http.NewRequestWithContext(t.Context(), "GET", rb.url+"/api/runbooks/Hello", nil)
	req.Header.Set("Authorization", "Bearer "+login.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusNotFound || strings.TrimSpace(string(got)) != `{"error":"Runbook not found: Hello"}` {
		t.Errorf("stage0 GET /api/runbooks/Hello: %d %s, want stage0's own 404", resp.StatusCode, got)
	}
}
