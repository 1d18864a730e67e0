package api

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"sync"
	"time"
)

// uiSession is a signed-in browser. The credential stays on the server:
// the browser holds only a random session id (an HttpOnly cookie), and
// every request re-authenticates the credential through the API's own
// authenticator, so a token removed by a reload or a JWT that expired ends
// the session at once.
type uiSession struct {
	token     string // the bearer token or JWT the person signed in with
	csrf      string // the anti-forgery token every form and htmx request carries
	principal string
	created   time.Time
	// seen is the person's last request: only what a person does keeps
	// a session from going idle (expire).
	seen time.Time
	// key is the session's key in the store (its id's hash).
	key [sha256.Size]byte
	// out is closed when the session ends (sign-out, expiry, pushed out
	// of the store): the live streams it opened end with it.
	out chan struct{}
	// end ends the session at its maximum lifetime, whatever its
	// streams do.
	end *time.Timer
}

// uiSessions is the server-side session store. It is in memory, per API
// replica: behind several replicas, the UI needs sticky sessions
// (docs/ui.md).
type uiSessions struct {
	mu   sync.Mutex
	byID map[[sha256.Size]byte]*uiSession // keyed by the id's hash, not the id
	idle time.Duration
	max  time.Duration
	cap  int
	// perPrincipal bounds one principal's sessions, so that signing in
	// again and again ends its own oldest sessions, never another's.
	perPrincipal int
	now          func() time.Time
	// checkEvery is how often an open stream asks whether its session
	// went idle meanwhile (expire).
	checkEvery time.Duration
}

func newUISessions(now func() time.Time) *uiSessions {
	return &uiSessions{byID: map[[sha256.Size]byte]*uiSession{}, idle: time.Hour, max: 12 * time.Hour, cap: 10000, perPrincipal: 50, now: now,
		checkEvery: time.Minute}
}

// randomToken is 32 bytes from the system's CSPRNG, base64url.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails on Linux (crypto/rand panics rather than return short)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create stores a session for token and returns its id (the cookie value).
func (s *uiSessions) create(token, principal string) (string, *uiSession) {
	id := randomToken()
	now := s.now()
	sess := &uiSession{token: token, csrf: randomToken(), principal: principal, created: now, seen: now, out: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(now)
	var oldest, oldestOwn [sha256.Size]byte
	var t, tOwn time.Time
	own := 0
	for k, v := range s.byID {
		if t.IsZero() || v.created.Before(t) {
			oldest, t = k, v.created
		}
		if v.principal == principal {
			own++
			if tOwn.IsZero() || v.created.Before(tOwn) {
				oldestOwn, tOwn = k, v.created
			}
		}
	}
	switch {
	case own >= s.perPrincipal:
		s.endLocked(oldestOwn)
	case len(s.byID) >= s.cap:
		// Full of live sessions of many principals: the oldest gives way.
		s.endLocked(oldest)
	}
	k := sha256.Sum256([]byte(id))
	sess.key = k
	s.byID[k] = sess
	sess.end = time.AfterFunc(s.max, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.endLocked(k)
	})
	return id, sess
}

// get returns the live session of id; a request of the person
// (active) refreshes its idle time, a page's automatic refresh does not.
func (s *uiSessions) get(id string, active bool) *uiSession {
	if id == "" {
		return nil
	}
	k := sha256.Sum256([]byte(id))
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.byID[k]
	if sess == nil {
		return nil
	}
	if now.Sub(sess.seen) > s.idle || now.Sub(sess.created) > s.max {
		s.endLocked(k)
		return nil
	}
	if active {
		sess.seen = now
	}
	return sess
}

// expire ends sess (and its streams) when it went idle or is past its
// maximum lifetime. An open stream calls it now and then: a stream is
// the page's doing, not a person's, so it does not keep the session from
// going idle, and no request would otherwise notice.
func (s *uiSessions) expire(sess *uiSession) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byID[sess.key] == sess && (now.Sub(sess.seen) > s.idle || now.Sub(sess.created) > s.max) {
		s.endLocked(sess.key)
	}
}

// drop ends the session of id (sign out).
func (s *uiSessions) drop(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endLocked(sha256.Sum256([]byte(id)))
}

// endLocked removes a session and ends the live streams it opened.
func (s *uiSessions) endLocked(k [sha256.Size]byte) {
	if sess := s.byID[k]; sess != nil {
		sess.end.Stop()
		close(sess.out)
		delete(s.byID, k)
	}
}

func (s *uiSessions) pruneLocked(now time.Time) {
	for k, v := range s.byID {
		if now.Sub(v.seen) > s.idle || now.Sub(v.created) > s.max {
			s.endLocked(k)
		}
	}
}

// validCSRF compares a submitted anti-forgery token with the session's in
// constant time.
func (sess *uiSession) validCSRF(got string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(sess.csrf)) == 1
}
