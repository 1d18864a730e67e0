package api_test

import (
	"strings"
	"testing"
	"time"
)

// TestRefusedSubmissionAuditedRedacted: a submission refused after its
// body was read (by the policy, by a check of the request) is audited
// with the submission, redacted: host, command and the env's names, never
// an env value.
func TestRefusedSubmissionAuditedRedacted(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	body := func(cmd string) map[string]any {
		return map[string]any{"host": "audit-1", "command": cmd, "env": map[string]any{"TOKEN": "s3cret-value"}}
	}
	if code, b := e.do("alice", "POST", "/v1/orders?wait=5", body("/usr/bin/whoami")); code != 403 {
		t.Fatalf("denied command: %d %s", code, b)
	}
	if code, b := e.do("alice", "POST", "/v1/orders", body("/bin/echo"), "Idempotency-Key", "a", "Idempotency-Key", "b"); code != 400 {
		t.Fatalf("two keys: %d %s", code, b)
	}
	want := map[string]string{"/usr/bin/whoami": "forbidden", "/bin/echo": "invalid_request"}
	deadline := time.Now().Add(10 * time.Second)
	for {
		rows, err := e.pool.Query(t.Context(), `SELECT request->>'command', code, request->>'host', request->'env_names'->>0, request::text
			FROM rejections WHERE principal = 'alice' AND path = '/v1/orders'`)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for rows.Next() {
			var cmd, code, host, env, text *string
			if err := rows.Scan(&cmd, &code, &host, &env, &text); err != nil {
				t.Fatal(err)
			}
			if cmd == nil || host == nil || *host != "audit-1" || env == nil || *env != "TOKEN" || strings.Contains(*text, "s3cret") {
				t.Fatalf("a refused submission audited as %v: want its host, command and env names, no env value", *text)
			}
			got[*cmd] = *code
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if len(got) == len(want) && got["/usr/bin/whoami"] == want["/usr/bin/whoami"] && got["/bin/echo"] == want["/bin/echo"] {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("audited refusals %v, want %v", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
