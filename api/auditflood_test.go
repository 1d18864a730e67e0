package api_test

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/netacl"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestAFloodDoesNotFillTheAudit: every refusal was an audit row, the
// per-IP limit's 429s and the ACL's 403s included, so one address
// sending requests as fast as it could (bad tokens, or none; even from an
// address acl.deny refuses) added a row to PostgreSQL per request,
// without end. An address records at most its per-IP allowance of
// refusals a minute (60 at least); the rest are answered as before and
// counted in the refusal metric, not recorded one by one.
func TestAFloodDoesNotFillTheAudit(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	var acl atomic.Pointer[netacl.ACL]
	srv := e.runbookAPI(config.Rule{Name: "ops", Roles: []string{"ops"}, Hosts: []string{"*"}, Allow: []string{".*"}},
		func() api.Settings {
			return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second, RatePerIP: 5, ACL: acl.Load()}
		}, func() config.Runbooks { return config.Default().Runbooks })
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	flood := func(n int, token string) map[int]int {
		t.Helper()
		codes := map[int]int{}
		for range n {
			req, err := http.NewRequestWithContext(testenv.Context(t), http.MethodGet, hs.URL+"/v1/orders", nil)
			if err != nil {
				t.Fatal(err)
			}
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			codes[resp.StatusCode]++
		}
		return codes
	}
	rows := func() int {
		var n int
		if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM rejections`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	codes := flood(300, "ord_not-a-token")
	if codes[http.StatusUnauthorized] != 5 || codes[http.StatusTooManyRequests] != 295 {
		t.Fatalf("a flood of bad tokens was answered %v, want 5 401s and 295 429s", codes)
	}
	if n := rows(); n < 60 || n > 65 {
		t.Fatalf("a flood of 300 bad tokens from one address left %d audit rows, want about 60 (the floor of its allowance)", n)
	}

	// An address the ACL refuses, before any limit: the same.
	deny, err := netacl.New(config.ACL{Deny: []string{"127.0.0.0/8", "::1/128"}})
	if err != nil {
		t.Fatal(err)
	}
	acl.Store(deny)
	before := rows()
	if codes := flood(300, ""); codes[http.StatusForbidden] != 300 {
		t.Fatalf("a denied address was answered %v, want 300 403s", codes)
	}
	if n := rows() - before; n > 5 {
		t.Fatalf("a flood of 300 requests from a denied address left %d audit rows", n)
	}
}
