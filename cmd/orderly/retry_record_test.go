package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
)

// retryRecordConfig is the config before (forbid false) and after a
// reload that forbids every request the test made: the policy allows
// admin only /bin/true, the action greet is gone, and stamp's hosts
// changed, so its ETag did.
func retryRecordConfig(forbid bool) string {
	policy, greet, hosts := "", `
    - name: greet
      command: ["/bin/echo", "hello"]
      roles: [admin]
      hosts: ["rfr"]
      run_as: ""`, `["rfr"]`
	if forbid {
		policy = `policy:
  - {name: admin, roles: [admin], hosts: ["*"], allow: ['^/bin/true$']}
`
		greet, hosts = "", `["rfr", "rfr-2"]`
	}
	return policy + `actions:
  definitions:` + greet + `
    - name: stamp
      params:
        - {name: n, pattern: "[0-9]{1,4}"}
      command: ["/bin/echo", "stamp", "{n}"]
      roles: [admin]
      hosts: ` + hosts + `
      run_as: ""
`
}

// TestRetryAnsweredFromItsRecord: a client whose first answer was lost
// retries with the same key after a reload that now forbids the request
// (the policy, the action gone, an If-Match that names the old
// definition). The retry is answered with the order the first request
// recorded, marked Idempotent-Replayed, over REST (a fan-out's batch too,
// unmarked), action runs and NATS;
// it was refused (403, 404, 412), and the client concluded that nothing
// had run. A new key, another request under the key, or another
// principal with the key, is still judged by the new config and learns
// nothing of the order; nothing runs twice.
func TestRetryAnsweredFromItsRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "orderly.yaml")
	if err := os.WriteFile(path, []byte(retryRecordConfig(false)), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newStackFrom(t, path, nil, "rfr")
	otherTok, sum := auth.NewToken()
	if _, err := s.b.store.EnsureAPIToken(t.Context(), postgres.APIToken{Name: "other", SHA256: sum, Roles: []string{"admin"}}); err != nil {
		t.Fatal(err)
	}
	type answer struct {
		code     int
		order    api.Order
		body     []byte
		replayed string
	}
	send := func(token, path string, body any, hdr ...string) answer {
		t.Helper()
		b, _ := json.Marshal(body)
		req, err := http.NewRequestWithContext(t.Context(), "POST", s.url+path, strings.NewReader(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var a answer
		a.code, a.replayed = resp.StatusCode, resp.Header.Get("Idempotent-Replayed")
		a.body, _ = io.ReadAll(resp.Body)
		_ = json.Unmarshal(a.body, &a.order)
		return a
	}
	code := func(a answer) string {
		var eb struct {
			Error struct{ Code string } `json:"error"`
		}
		_ = json.Unmarshal(a.body, &eb)
		return eb.Error.Code
	}
	echo := map[string]any{"host": "rfr", "command": "echo", "args": []string{"record"}}
	greet := map[string]any{"host": "rfr"}
	stamp := map[string]any{"host": "rfr", "params": map[string]any{"n": "42"}}
	tag := etagOfStamp(t, s)

	first := map[string]answer{
		"rest":  send(s.token, "/v1/orders?wait=20", echo, "Idempotency-Key", "rec-rest"),
		"greet": send(s.token, "/v1/actions/greet/run?wait=20", greet, "Idempotency-Key", "rec-greet"),
		"stamp": send(s.token, "/v1/actions/stamp/run?wait=20", stamp, "Idempotency-Key", "rec-stamp", "If-Match", tag),
	}
	for name, a := range first {
		if a.code != http.StatusOK || a.order.Status != "succeeded" || a.replayed != "" {
			t.Fatalf("first %s: %d %s (replayed %q)", name, a.code, a.body, a.replayed)
		}
	}
	fan := map[string]any{"hosts": []string{"rfr"}, "command": "echo", "args": []string{"fan"}}
	batchOf := func(a answer) api.Batch {
		var b api.Batch
		_ = json.Unmarshal(a.body, &b)
		return b
	}
	firstFan := batchOf(send(s.token, "/v1/orders?wait=20", fan, "Idempotency-Key", "rec-fan"))
	if len(firstFan.Orders) != 1 {
		t.Fatalf("first fan-out: %+v", firstFan)
	}
	n := newNATSSubmitter(t, s.natsURL, "rfr")
	firstNATS, _ := sendNATS(t, n, s.token, "rec-nats", echo)
	if firstNATS.Order == nil {
		t.Fatalf("first NATS submission: %+v", firstNATS.Error)
	}

	if err := os.WriteFile(path, []byte(retryRecordConfig(true)), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, b := s.do("POST", "/v1/admin/reload", nil); code != http.StatusOK {
		t.Fatalf("reload: %d %s", code, b)
	}
	if a := send(s.token, "/v1/actions/stamp/run", stamp, "If-Match", tag); a.code != http.StatusPreconditionFailed {
		t.Fatalf("the reload did not change stamp's ETag: %d %s", a.code, a.body)
	}

	retries := map[string]answer{
		"rest":  send(s.token, "/v1/orders?wait=20", echo, "Idempotency-Key", "rec-rest"),
		"greet": send(s.token, "/v1/actions/greet/run?wait=20", greet, "Idempotency-Key", "rec-greet"),
		"stamp": send(s.token, "/v1/actions/stamp/run?wait=20", stamp, "Idempotency-Key", "rec-stamp", "If-Match", tag),
	}
	for name, a := range retries {
		if a.code != http.StatusOK || a.order.ID != first[name].order.ID || a.order.Status != "succeeded" || a.replayed != "true" {
			t.Errorf("%s retry after the reload: %d %s (Idempotent-Replayed %q); want order %s, replayed",
				name, a.code, a.body, a.replayed, first[name].order.ID)
		}
	}
	if a := send(s.token, "/v1/orders?wait=20", fan, "Idempotency-Key", "rec-fan"); a.code != http.StatusOK ||
		len(batchOf(a).Orders) != 1 || batchOf(a).Orders[0].ID != firstFan.Orders[0].ID || len(batchOf(a).Refused) != 0 {
		t.Errorf("fan-out retry after the reload: %d %s; want order %s", a.code, a.body, firstFan.Orders[0].ID)
	}
	// Past the stream's duplicate window, as a publisher's retry on timeout.
	time.Sleep(2 * queue.SubmitDedupWindow)
	again, msg := sendNATS(t, n, s.token, "rec-nats", echo)
	if again.Order == nil || again.Order.ID != firstNATS.Order.ID || msg.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("NATS retry after the reload: %+v / %+v, headers %v; want order %s, replayed", again.Order, again.Error,
			msg.Header, firstNATS.Order.ID)
	}

	// What the key does not cover is judged by the new config, and
	// learns nothing of the order.
	for _, c := range []struct {
		what string
		a    answer
		code string
	}{
		{"a new key", send(s.token, "/v1/orders", echo, "Idempotency-Key", "rec-new"), "forbidden"},
		{"another request under the key", send(s.token, "/v1/orders", map[string]any{"host": "rfr", "command": "echo", "args": []string{"other"}},
			"Idempotency-Key", "rec-rest"), "forbidden"},
		{"another principal with the key", send(otherTok, "/v1/orders", echo, "Idempotency-Key", "rec-rest"), "forbidden"},
		{"a new key for the gone action", send(s.token, "/v1/actions/greet/run", greet, "Idempotency-Key", "rec-greet-2"), "not_found"},
		{"another principal's retry of the gone action", send(otherTok, "/v1/actions/greet/run", greet, "Idempotency-Key", "rec-greet"), "not_found"},
		{"another run under the action's key", send(s.token, "/v1/actions/stamp/run", map[string]any{"host": "rfr", "params": map[string]any{"n": "43"}},
			"Idempotency-Key", "rec-stamp", "If-Match", tag), "precondition_failed"},
		{"a new key with the old If-Match", send(s.token, "/v1/actions/stamp/run", stamp, "Idempotency-Key", "rec-stamp-2", "If-Match", tag), "precondition_failed"},
	} {
		if got := code(c.a); got != c.code || c.a.replayed != "" || strings.Contains(string(c.a.body), first["rest"].order.ID.String()) {
			t.Errorf("%s: %d %s; want %s", c.what, c.a.code, c.a.body, c.code)
		}
	}
	if a, _ := sendNATS(t, n, s.token, "rec-nats-new", echo); a.Error == nil || a.Error.Code != "forbidden" {
		t.Errorf("a new NATS submission after the reload: %+v / %+v; want forbidden", a.Order, a.Error)
	}
	var runs int
	if err := s.b.pool.QueryRow(t.Context(), `SELECT count(*) FROM orders`).Scan(&runs); err != nil {
		t.Fatal(err)
	}
	if runs != 5 {
		t.Errorf("%d orders recorded, want the 5 first ones", runs)
	}
}

// etagOfStamp is the ETag GET /v1/actions/stamp answers.
func etagOfStamp(t *testing.T, s *stack) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", s.url+"/v1/actions/stamp", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	tag := resp.Header.Get("ETag")
	if tag == "" {
		t.Fatal("GET /v1/actions/stamp answered no ETag")
	}
	return tag
}

// sendNATS is natsSubmitter.send that also returns the answer's message,
// for its headers. The answer is checked as a submitter checks it
// (api.VerifyAnswer): every answer is signed.
func sendNATS(t *testing.T, n *natsSubmitter, token, msgID string, body any) (api.IntakeAnswer, *nats.Msg) {
	t.Helper()
	m := nats.NewMsg(queue.SubmitSubject + n.host)
	m.Header.Set("Authorization", "Bearer "+token)
	m.Header.Set("Orderly-Reply", n.reply)
	if msgID != "" {
		m.Header.Set("Nats-Msg-Id", msgID)
	}
	m.Data, _ = json.Marshal(body)
	if err := n.nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	msg, err := n.answers.NextMsg(20 * time.Second)
	if err != nil {
		t.Fatalf("no answer to submission %q: %v", msgID, err)
	}
	a, err := api.VerifyAnswer("Bearer "+token, msg)
	if err != nil {
		t.Fatalf("answer %.300s (header %v): %v", msg.Data, msg.Header, err)
	}
	return a, msg
}
