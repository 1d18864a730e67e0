package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestStage0CompatWire checks the bytes a stage0 client reads at the
// edges stage0's source shows (COMPAT.md §3): required-env's objects and
// truthiness, and the name of a file without a title.
func TestStage0CompatWire(t *testing.T) {
	t.Setenv("S0W_SET", "yes")
	t.Setenv("S0W_EMPTY", "")
	const secret = "stage0-wire-test-secret-0123456789abcdef"
	dir := t.TempDir()
	books := map[string]string{
		"Env.md": runbookDoc("Env", "S0W_SET: Set on the service\nS0W_EMPTY: Empty on the service\nS0W_UNSET: Not set",
			"  []", "", "echo env"),
		"Two.md": runbookDoc("Two", "A_VAR: first\nB_VAR: second", "  []", "", "echo two"),
		"Headers.md": runbookDoc("Headers", "{}", "  []", "", `printf '%s\n' "$RUNBOOK_HEADERS"
eval "set -- $RUNBOOK_HEADERS"
printf '<%s>\n' "$@"
[ "$RUNBOOK_EXEC_DIR_HOST" -ef . ] && echo "exec dir is the run dir"`),
		"Cr.md":    runbookDoc("Cr", "{}", "  []", "", `printf 'a\r\nb\rc\n'; printf 'x\ry' >&2`),
		"Plain.md": "Just notes, no title line.\n",
	}
	for name, text := range books {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := newSecStack(t, fmt.Sprintf(`
policy:
  - {name: stage0, roles: [developer], hosts: ["*"], allow: ['^runbook:']}
runbooks: {dir: %q, timeout: 60s, host: wire}
compat:
  stage0: {enabled: true, jwt_secret: %q}
`, dir, secret), nil, "wire")
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "ci", "roles": []string{"developer"},
		"iss": "dev-idp", "aud": "dev-api", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) string {
		t.Helper()
		resp, b := s.send(call{method: "GET", path: path, token: tok})
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
		return strings.TrimSpace(string(b))
	}

	t.Run("required-env lists objects and counts an empty value as missing", func(t *testing.T) {
		set := `{"description":"Set on the service","name":"S0W_SET"}`
		empty := `{"description":"Empty on the service","name":"S0W_EMPTY"}`
		unset := `{"description":"Not set","name":"S0W_UNSET"}`
		want := `{"available":[` + set + `],"filename":"Env.md","missing":[` + empty + `,` + unset + `],` +
			`"required":[` + set + `,` + empty + `,` + unset + `],"success":true}`
		if got := get("/api/runbooks/Env.md/required-env"); got != want {
			t.Errorf("required-env:\n got %s\nwant %s", got, want)
		}
	})

	t.Run("a file without a title is named by its file", func(t *testing.T) {
		if got := get("/api/runbooks/Plain.md"); !strings.Contains(got, `"name":"Plain.md"`) {
			t.Errorf("get: %s", got)
		}
	})
}
