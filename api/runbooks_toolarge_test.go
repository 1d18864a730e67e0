package api_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunbookOverTheSizeLimitShowsWhy: a runbook file over 4 MiB is not
// read. It was left out of GET /v1/runbooks without a word, and GET,
// validate and execute answered only "the runbook cannot be read"; now it
// is listed, invalid, with a runbook_too_large problem that names its size
// and the limit, wherever the text's problems are shown (stage0's GET
// included, which must not answer an empty content as the file's).
func TestRunbookOverTheSizeLimitShowsWhy(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"h1"}})
	dir := t.TempDir()
	const size = 4<<20 + 1
	f, err := os.Create(filepath.Join(dir, "Huge.md"))
	if err == nil {
		err = f.Truncate(size)
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	rb := e.stage0Server(dir)

	const want = "Runbook file is too large: 4194305 bytes, over the limit of 4194304 bytes (4 MiB)"
	type problem struct{ Code, Message string }
	tooLarge := func(what string, problems []problem) {
		t.Helper()
		if len(problems) != 1 || problems[0].Code != "runbook_too_large" || problems[0].Message != want {
			t.Errorf("%s: problems %+v, want runbook_too_large %q", what, problems, want)
		}
	}
	code, b := rb.do("alice", "GET", "/v1/runbooks", nil)
	var list struct {
		Runbooks []struct {
			File     string
			Valid    bool
			Problems []problem
		}
	}
	if err := json.Unmarshal(b, &list); code != http.StatusOK || err != nil || len(list.Runbooks) != 1 ||
		list.Runbooks[0].File != "Huge.md" || list.Runbooks[0].Valid {
		t.Fatalf("GET /v1/runbooks: %d %s", code, b)
	}
	tooLarge("the list", list.Runbooks[0].Problems)

	code, b = rb.do("alice", "GET", "/v1/runbooks/Huge.md", nil)
	var one struct{ Problems []problem }
	if err := json.Unmarshal(b, &one); code != http.StatusOK || err != nil {
		t.Fatalf("GET /v1/runbooks/Huge.md: %d %s", code, b)
	}
	tooLarge("GET", one.Problems)

	for _, path := range []string{"/v1/runbooks/Huge.md/validate", "/v1/runbooks/Huge.md/execute"} {
		code, b = rb.do("alice", "POST", path, map[string]any{})
		var refusal struct {
			Error struct {
				Details struct{ Problems []problem }
			}
		}
		if err := json.Unmarshal(b, &refusal); code != http.StatusUnprocessableEntity || err != nil {
			t.Fatalf("POST %s: %d %s", path, code, b)
		}
		tooLarge(path, refusal.Error.Details.Problems)
	}

	code, b = rb.do("", "POST", "/dev-login", map[string]any{"subject": "boss", "roles": []string{"admin"}})
	var login struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(b, &login); code != http.StatusOK || err != nil {
		t.Fatalf("dev-login: %d %s", code, b)
	}
	req, _ := http.NewRequest("GET", rb.url+"/api/runbooks/Huge.md", nil)
	req.Header.Set("Authorization", "Bearer "+login.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct{ Error string }
	if err := json.NewDecoder(resp.Body).Decode(&got); resp.StatusCode != http.StatusUnprocessableEntity || err != nil ||
		!strings.Contains(got.Error, "4194305 bytes") {
		t.Fatalf("stage0 GET /api/runbooks/Huge.md: %d %+v %v", resp.StatusCode, got, err)
	}
}
