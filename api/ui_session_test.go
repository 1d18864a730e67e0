package api

import (
	"context"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
)

// TestUISessionsPerPrincipal: one principal signing in again and again
// ends its own oldest sessions, never another principal's; the store's
// overall cap still holds.
func TestUISessionsPerPrincipal(t *testing.T) {
	now := time.Unix(1e9, 0)
	s := newUISessions(func() time.Time { now = now.Add(time.Millisecond); return now })
	s.cap, s.perPrincipal = 10, 3
	adminID, _ := s.create("admin-token", "admin")
	var alice []string
	for range 20 {
		id, _ := s.create("alice-token", "alice")
		alice = append(alice, id)
	}
	if s.get(adminID, true) == nil {
		t.Fatal("alice's sign-ins ended the admin's session")
	}
	for i, id := range alice {
		if live := s.get(id, true) != nil; live != (i >= len(alice)-3) {
			t.Errorf("alice's session %d live=%v; want only her last 3", i, live)
		}
	}
	for i := range 12 {
		s.create("t", "p"+string(rune('a'+i)))
	}
	if n := len(s.byID); n > s.cap {
		t.Errorf("%d sessions, cap %d", n, s.cap)
	}
}

// TestUISessionEndsItsStreams: a session that ends, by sign-out or by
// expiry, closes out (the live streams it opened end); a stream's check
// (expire) ends a session whose person did nothing for the idle time,
// and leaves one a person used.
func TestUISessionEndsItsStreams(t *testing.T) {
	now := time.Unix(1e9, 0)
	s := newUISessions(func() time.Time { return now })
	ended := func(sess *uiSession) bool {
		select {
		case <-sess.out:
			return true
		default:
			return false
		}
	}
	outID, out := s.create("t", "alice")
	_, idle := s.create("t", "bob")
	usedID, used := s.create("t", "carol")
	_, watched := s.create("t", "dave")
	s.drop(outID)
	if !ended(out) {
		t.Error("sign-out did not end the session's streams")
	}
	for range 3 {
		now = now.Add(30 * time.Minute)
		s.get(usedID, true) // the person's request
		s.expire(used)
		s.expire(watched) // its stream is open, nobody uses the page
	}
	if !ended(watched) {
		t.Error("a session whose only use was an open stream for 90 minutes did not go idle")
	}
	s.pruneLocked(now)
	if !ended(idle) {
		t.Error("a session idle for 90 minutes did not end its streams")
	}
	if ended(used) || s.get(usedID, true) == nil {
		t.Error("a session a person used went idle")
	}
}

// TestUIOpenStreamIsNotActivity: a run page's open event stream does not
// keep its session from going idle: an hour after the person's last
// request the stream ends with session-ended, as the hosts page's
// refresh then gets a 401. It kept the session alive (touching it every
// minute) up to the twelve-hour cap.
func TestUIOpenStreamIsNotActivity(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1e9, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	token, sum := auth.NewToken()
	a, err := auth.New(config.Auth{Tokens: []config.Token{{Name: "alice", SHA256: sum, Roles: []string{"ops"}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Deps: Deps{Auth: func() Authenticator { return a }, Settings: func() Settings { return Settings{} }}}
	// The native stream: open until its request ends.
	opened := make(chan struct{}, 1)
	native := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setEventStreamHeaders(w.Header())
		w.WriteHeader(http.StatusOK)
		_ = http.NewResponseController(w).Flush()
		opened <- struct{}{}
		<-r.Context().Done()
	})
	u := &webUI{s: s, native: native, sessions: newUISessions(clock), pages: mustParsePages()}
	u.sessions.checkEvery = 5 * time.Millisecond
	id, _ := u.sessions.create(token, "alice")
	h := u.requireSession(http.HandlerFunc(u.events))

	req := httptest.NewRequest("GET", "/ui/orders/01a23d16-5e8f-7009-87a7-722136a17d78/events", nil)
	req.AddCookie(&http.Cookie{Name: uiSessionCookie, Value: id})
	req.Header.Set("Accept", "text/event-stream")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { defer close(done); h.ServeHTTP(rec, req.WithContext(ctx)) }()
	<-opened
	mu.Lock()
	now = now.Add(61 * time.Minute)
	mu.Unlock()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cancel()
		<-done
		t.Fatal("the stream went on an hour after the person's last request: its session did not go idle")
	}
	if !strings.Contains(rec.Body.String(), "event: session-ended") {
		t.Errorf("the stream ended without saying the session ended:\n%s", rec.Body)
	}
}

// TestUISessionEndsAtItsMaximumLifetime: a session whose stream keeps it
// busy still ends at its maximum lifetime (twelve hours), and its streams
// with it. Before, only a request with the session or a new sign-in
// looked at its age, so a stream opened in the eleventh hour ran on to
// its order's end.
func TestUISessionEndsAtItsMaximumLifetime(t *testing.T) {
	s := newUISessions(time.Now)
	s.max = 50 * time.Millisecond
	_, sess := s.create("t", "alice")
	select {
	case <-sess.out:
	case <-time.After(10 * time.Second):
		t.Fatal("the session outlived its maximum lifetime")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.byID) != 0 {
		t.Errorf("%d sessions left in the store", len(s.byID))
	}
}

// TestUIAutoRefreshIsNotActivity: the hosts page's refresh every 5 s is
// not a person using the page, so an unattended hosts page lets its
// session go idle after an hour; a person's request keeps it. Before,
// each refresh counted as activity and the page kept its session alive
// to the 12-hour cap.
func TestUIAutoRefreshIsNotActivity(t *testing.T) {
	page, err := fs.ReadFile(uiFiles, "web/ui/templates/hosts.html")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(page), `hx-trigger="every 5s" hx-headers='{"`+uiRefreshHeader+`": "auto"}'`) {
		t.Fatalf("the hosts page does not mark its refresh with %s:\n%s", uiRefreshHeader, page)
	}
	now := time.Unix(1e9, 0)
	h, id := sessionUI(t, &now)
	get := func(refresh bool) int {
		req := httptest.NewRequest("GET", "/ui/hosts", nil)
		req.AddCookie(&http.Cookie{Name: uiSessionCookie, Value: id})
		req.Header.Set("HX-Request", "true")
		if refresh {
			req.Header.Set(uiRefreshHeader, "auto")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	// A person's request every 50 minutes keeps the session.
	for range 3 {
		now = now.Add(50 * time.Minute)
		if code := get(false); code != http.StatusOK {
			t.Fatalf("a person's request 50 minutes after the last: %d", code)
		}
	}
	// Refreshes alone (here one every 5 minutes) do not.
	for i := range 11 {
		now = now.Add(5 * time.Minute)
		if code := get(true); code != http.StatusOK {
			t.Fatalf("refresh %d, %d minutes after the person's last request: %d", i, (i+1)*5, code)
		}
	}
	now = now.Add(6 * time.Minute)
	if code := get(true); code != http.StatusUnauthorized {
		t.Fatalf("a refresh 61 minutes after the person's last request: %d, want the session ended (401)", code)
	}
	if code := get(false); code != http.StatusUnauthorized {
		t.Fatalf("the session went on after it went idle: %d", code)
	}
}

// TestUIStreamConnectionsAreNotActivity: a run page's event stream
// connecting (an EventSource's Accept), again and again when each
// reconnect is refused, and the page's own check of the order's state
// (ui.js, marked as an automatic refresh) do not keep a session from
// going idle; they kept an unattended run page's session alive for as
// long as its reconnects were refused.
func TestUIStreamConnectionsAreNotActivity(t *testing.T) {
	js, err := fs.ReadFile(uiFiles, "web/ui/static/ui.js")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `headers: { "HX-Request": "true", "`+uiRefreshHeader+`": "auto" }`) {
		t.Fatalf("the run page's check of the order's state is not marked with %s", uiRefreshHeader)
	}
	now := time.Unix(1e9, 0)
	h, id := sessionUI(t, &now)
	connect := func() int {
		req := httptest.NewRequest("GET", "/ui/orders/01a23d16-5e8f-7009-87a7-722136a17d78/events", nil)
		req.AddCookie(&http.Cookie{Name: uiSessionCookie, Value: id})
		req.Header.Set("Accept", "text/event-stream")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	for i := range 11 {
		now = now.Add(5 * time.Minute)
		if code := connect(); code != http.StatusOK {
			t.Fatalf("connection %d, %d minutes after the person's last request: %d", i, (i+1)*5, code)
		}
	}
	now = now.Add(6 * time.Minute)
	if code := connect(); code == http.StatusOK {
		t.Fatalf("a stream's connection 61 minutes after the person's last request: %d, want the session ended", code)
	}
}

// sessionUI is h, a page behind the web UI's requireSession that answers
// 200, on a UI whose clock reads *now, and the id of a session of alice's.
func sessionUI(t *testing.T, now *time.Time) (h http.Handler, id string) {
	t.Helper()
	token, sum := auth.NewToken()
	a, err := auth.New(config.Auth{Tokens: []config.Token{{Name: "alice", SHA256: sum, Roles: []string{"ops"}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Deps: Deps{Auth: func() Authenticator { return a }, Settings: func() Settings { return Settings{} }}}
	u := &webUI{s: s, sessions: newUISessions(func() time.Time { return *now }), pages: mustParsePages()}
	h = u.requireSession(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }))
	id, _ = u.sessions.create(token, "alice")
	return h, id
}
