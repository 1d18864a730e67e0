package api_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/netacl"
	"github.com/orderly-run/orderly/internal/queue"
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

// TestANATSFloodDoesNotFillTheAudit: a NATS submission has no client
// address, so every refused one was a rejections row: a publisher
// sending bad-token messages as fast as it could, to subjects of made-up
// hosts, added a row per message without end. Refusals before a token
// proves a principal now share one allowance a minute (the per-IP one,
// 60 at least), whatever their subject; each is still answered. A
// principal's refusals are counted against its own allowance, so the
// flood does not hide them.
func TestANATSFloodDoesNotFillTheAudit(t *testing.T) {
	e := newAPIEnv(t, envOptions{ratePerIP: 5})
	nc, inbox, sub := replyInbox(t, e.natsURL)
	const n = 200
	start := time.Now()
	for i := range n {
		m := nats.NewMsg(queue.SubmitSubject + fmt.Sprintf("made-up-%d", i%50))
		m.Header.Set("Authorization", "Bearer ord_not-a-token")
		m.Header.Set("Orderly-Reply", inbox)
		m.Data = []byte(`{"command":"uptime"}`)
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		reply, err := sub.NextMsg(30 * time.Second)
		if err != nil {
			t.Fatalf("answer %d of %d: %v", i+1, n, err)
		}
		var a api.IntakeAnswer
		if err := json.Unmarshal(reply.Data, &a); err != nil || a.Error == nil || a.Error.Code != "unauthenticated" {
			t.Fatalf("answer %d: %s, want unauthenticated", i+1, reply.Data)
		}
	}
	rows := func(principal string) int {
		var c int
		if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM rejections WHERE source = 'nats' AND principal = $1`, principal).Scan(&c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	// The allowance, and what refilled (one a second) while the flood
	// ran, however long a loaded machine took.
	refilled := int(time.Since(start).Seconds()) + 1
	if c := rows(""); c < 60 || c > 60+refilled {
		t.Fatalf("a flood of %d bad-token NATS submissions left %d audit rows, want 60 (one allowance) to %d (and what refilled in %s)",
			n, c, 60+refilled, time.Since(start).Round(time.Millisecond))
	}
	// No policy rule names the auditor role: refused, and recorded.
	if a := e.publish("auditor", "nats-1", "after-the-flood", map[string]any{"command": "uptime"}); a.Error == nil || a.Error.Code != "forbidden" {
		t.Fatalf("answer %+v, want forbidden", a)
	}
	if c := rows("auditor"); c != 1 {
		t.Fatalf("a principal's refusal after the flood left %d rows, want 1", c)
	}
}

// TestAFloodFromManyAddressesDoesNotFillTheAudit: each address had its
// own allowance of recorded refusals a minute, so a client with many
// addresses (an IPv6 /48 holds 65,536 /64s, each a key of its own) added
// that many allowances of rows. Refusals of no principal from every
// address together now record at most ten addresses' allowances a
// minute; the rest are answered all the same and counted in the metric.
// A principal's refusal is still recorded after the flood.
func TestAFloodFromManyAddressesDoesNotFillTheAudit(t *testing.T) {
	e := newAPIEnv(t, envOptions{ratePerIP: 5}) // an address records 60 a minute
	const addresses, each = 20, 70
	start := time.Now()
	var wg sync.WaitGroup
	codes := make([]map[int]int, addresses)
	for a := range addresses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(2+a))}
			client := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: src}).DialContext}}
			defer client.CloseIdleConnections()
			codes[a] = map[int]int{}
			for range each {
				req, err := http.NewRequestWithContext(testenv.Context(t), http.MethodGet, e.url+"/v1/orders", nil)
				if err != nil {
					t.Error(err)
					return
				}
				req.Header.Set("Authorization", "Bearer ord_not-a-token")
				resp, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				codes[a][resp.StatusCode]++
			}
		}()
	}
	wg.Wait()
	for a, c := range codes {
		if c[http.StatusUnauthorized]+c[http.StatusTooManyRequests] != each {
			t.Fatalf("address %d was answered %v, want %d 401s and 429s", a, c, each)
		}
	}
	var rows int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM rejections`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	// Ten addresses' allowances, and what refilled (ten a second) while
	// the flood ran, however long a loaded machine took.
	if limit := 10*60 + 10*(int(time.Since(start).Seconds())+1); rows > limit {
		t.Fatalf("%d addresses sending %d bad tokens each left %d audit rows in %s, want at most %d (ten addresses' allowances and their refill)",
			addresses, each, rows, time.Since(start).Round(time.Millisecond), limit)
	}
	// No policy rule names the auditor role: refused, and recorded.
	if code, b := e.do("auditor", http.MethodPost, "/v1/orders", map[string]any{"host": "h1", "command": "uptime"}); code != http.StatusForbidden {
		t.Fatalf("auditor's order: %d %s, want 403", code, b)
	}
	var mine int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM rejections WHERE principal = 'auditor'`).Scan(&mine); err != nil {
		t.Fatal(err)
	}
	if mine != 1 {
		t.Fatalf("a principal's refusal after the flood left %d rows, want 1", mine)
	}
}
