package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestWaitEndsWhenTheCredentialGoes: a wait (?wait, Prefer: wait) holds
// its request as long as its order runs, up to http.max_wait (5m), so it
// checks its credential as a live stream does: a token removed by a
// reload while the request waits ends the wait with 401 unauthenticated,
// naming the order (or the fan-out's batch), which goes on. The wait ran
// to the end and answered the finished order, output and all, to a
// credential the server no longer accepted.
func TestWaitEndsWhenTheCredentialGoes(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"h1"}})
	for _, c := range []struct {
		name, key string
		body      map[string]any
	}{
		{"single", "order_id", map[string]any{"host": "h1", "command": "sh", "args": []string{"-c", "sleep 6; echo the-secret-output"}}},
		{"fan-out", "batch_id", map[string]any{"hosts": []string{"h1"}, "command": "sh", "args": []string{"-c", "sleep 6; echo the-secret-output"}}},
	} {
		e.authn.Store(authenticator(t, e.tokens, "")) // bob's token accepted again
		revoked := time.AfterFunc(time.Second, func() { e.revoke("bob") })
		code, hdr, body := e.doHeader("bob", http.MethodPost, "/v1/orders?wait=60", c.body)
		revoked.Stop()
		var answer struct {
			Error struct {
				Code    string         `json:"code"`
				Details map[string]any `json:"details"`
			} `json:"error"`
		}
		_ = json.Unmarshal(body, &answer)
		if code != http.StatusUnauthorized || answer.Error.Code != "unauthenticated" || answer.Error.Details[c.key] == nil ||
			!strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") || strings.Contains(string(body), "the-secret-output") {
			t.Errorf("%s: a wait whose token was revoked answered %d %s", c.name, code, body)
		}
	}
}
