package api

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
)

// Sweeping bounds the limiter's memory: a bucket idle for a whole window
// is full again, the same as no bucket, so it is dropped. A sweep walks
// every bucket, so it runs at most once per sweepEvery, or sooner (at most
// once per second) when more than sweepAbove keys are held.
const (
	rateWindow = time.Minute
	sweepEvery = time.Minute
	sweepAbove = 100_000
)

// rateLimiter is an in-memory token bucket per key (a client address or a
// principal name). A bucket holds up to perMinute tokens and refills at
// perMinute per minute, so a client may burst a minute's allowance and then
// keeps the average. perMinute is passed on every call rather than fixed at
// construction, so a config reload changes the limit at once.
//
// The state is per process: several API replicas each allow the full rate
// (see docs/security.md).
type rateLimiter struct {
	now func() time.Time

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(now func() time.Time) *rateLimiter {
	if now == nil {
		now = time.Now
	}
	return &rateLimiter{now: now, buckets: map[string]*bucket{}, lastSweep: now()}
}

// rateTake is one request counted against a limit: whether it was
// within it, how long until one more would be (when it was not), and for
// a client that paces itself (stage0's X-RateLimit-* headers) the limit,
// the requests left and when the whole allowance is back.
type rateTake struct {
	ok        bool
	wait      time.Duration
	limit     int
	remaining int
	reset     time.Time
}

// allow takes one token from key's bucket. When the bucket is empty it
// takes nothing and returns how long until a token is available again.
func (l *rateLimiter) allow(key string, perMinute int) (bool, time.Duration) {
	t := l.take(key, perMinute)
	return t.ok, t.wait
}

// take is allow, with what is left in the bucket afterwards.
func (l *rateLimiter) take(key string, perMinute int) rateTake {
	if perMinute <= 0 {
		return rateTake{ok: true}
	}
	now := l.now()
	capacity := float64(perMinute)
	perSecond := capacity / rateWindow.Seconds()

	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{tokens: capacity, last: now}
		l.buckets[key] = b
	}
	if elapsed := now.Sub(b.last).Seconds(); elapsed > 0 {
		b.tokens = math.Min(capacity, b.tokens+elapsed*perSecond)
		b.last = now
	}
	// A reload that lowered the limit takes effect at once.
	b.tokens = math.Min(b.tokens, capacity)
	t := rateTake{limit: perMinute}
	if b.tokens >= 1 {
		b.tokens--
		t.ok = true
	} else {
		t.wait = time.Duration((1 - b.tokens) / perSecond * float64(time.Second))
	}
	t.remaining = int(b.tokens)
	t.reset = now.Add(time.Duration((capacity - b.tokens) / perSecond * float64(time.Second)))
	return t
}

// sweep drops buckets idle for a whole window; l.mu is held.
func (l *rateLimiter) sweep(now time.Time) {
	since := now.Sub(l.lastSweep)
	if since < sweepEvery && (len(l.buckets) <= sweepAbove || since < time.Second) {
		return
	}
	l.lastSweep = now
	for k, b := range l.buckets {
		if now.Sub(b.last) >= rateWindow {
			delete(l.buckets, k)
		}
	}
}

// ipRateKey is the rate-limit key of a client address: the address itself
// for IPv4, its /64 for IPv6, since one host usually holds a whole /64 and
// could otherwise get a fresh bucket per address.
func ipRateKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap()
	if a.Is6() {
		p, err := a.WithZone("").Prefix(64)
		if err == nil {
			return p.String()
		}
	}
	return a.String()
}

// limitIP applies limits.rate_per_ip before authentication, keyed by the
// client address the network middleware resolved from the socket (or from
// X-Forwarded-For written by a trusted proxy), never by a header an
// untrusted client wrote. It guards the work a request causes before its
// token is even checked, including the audit row of a refusal.
func (s *Server) limitIP(next http.Handler) http.Handler {
	return s.limitIPWith(next, func(w http.ResponseWriter, r *http.Request, e *order.Error) { s.writeError(w, r, e) })
}

// limitIPWith is limitIP answering a refusal with refuse: a compat
// surface's in its original's format.
func (s *Server) limitIPWith(next http.Handler, refuse func(http.ResponseWriter, *http.Request, *order.Error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n := s.Settings().RatePerIP; n > 0 {
			t := s.take(r.Context(), s.ipLimits, "ip", ipRateKey(clientIPOf(r)), n)
			if wantsRateHeaders(r.Context()) {
				setRateHeaders(w, t)
			}
			if !t.ok {
				refuse(w, r, rateLimitError("ip", "client address", n, t.wait))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// limitPrincipal applies limits.rate_per_principal after authentication,
// so one credential cannot monopolize the API from many addresses.
func (s *Server) limitPrincipal(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.spendPrincipal(r.Context(), principalOf(r).Name); err != nil {
			s.writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// rateLimited answers 429 with Retry-After in whole seconds (writeError,
// from details.retry_after_seconds), rounded up so a client that waits
// exactly that long finds a token.
func (s *Server) rateLimited(w http.ResponseWriter, r *http.Request, scope, what string, perMinute int, wait time.Duration) {
	s.writeError(w, r, rateLimitError(scope, what, perMinute, wait))
}

// rateLimitError is the refusal of a request over its limit, the same for
// REST (429) and NATS (the answer on Orderly-Reply), with the wait in
// whole seconds.
func rateLimitError(scope, what string, perMinute int, wait time.Duration) *order.Error {
	return &order.Error{
		Code:    order.CodeRateLimited,
		Message: "rate limit exceeded: at most " + strconv.Itoa(perMinute) + " requests per minute per " + what,
		Details: map[string]any{"scope": scope, "limit_per_minute": perMinute,
			"retry_after_seconds": max(int64(math.Ceil(wait.Seconds())), 1)},
	}
}

// spendPrincipal spends one of principal's limits.rate_per_principal,
// from the same buckets (or shared counters) whichever way it comes: a
// REST request (limitPrincipal), a compat surface's (LimitPrincipal) or a
// NATS submission, so that a principal's allowance is one. A NATS message
// has no client address the API could trust, so limits.rate_per_ip has
// nothing to key on there; the NATS server's own authentication guards
// the connection.
func (s *Server) spendPrincipal(ctx context.Context, principal string) error {
	_, err := s.spendPrincipalTake(ctx, principal)
	return err
}

// spendPrincipalTake is spendPrincipal, with the count for a client that
// paces itself (zero when the limit is off).
func (s *Server) spendPrincipalTake(ctx context.Context, principal string) (rateTake, error) {
	n := s.Settings().RatePerPrincipal
	if n <= 0 {
		return rateTake{}, nil
	}
	t := s.take(ctx, s.principalLimits, "principal", principal, n)
	if !t.ok {
		return t, rateLimitError("principal", "principal", n, t.wait)
	}
	return t, nil
}

// How many refusals a minute one address has recorded: its per-IP
// allowance, but never fewer than minAuditPerIP (the ACL refuses before
// any limit, and an operator reading the audit wants more than a tiny
// per-IP limit's share), and defaultAuditPerIP when the limit is off.
const (
	minAuditPerIP     = 60
	defaultAuditPerIP = 1200
)

// recordRefusal reports whether a refusal of clientIP's request gets its
// row in rejections. Every refusal was one, the per-IP limit's 429s and
// the ACL's 403s included, so an address sending requests as fast as it
// could (bad tokens, none, or from an address acl.deny refuses) added a
// row to PostgreSQL per request without end. An address has at most its
// per-IP allowance (limits.rate_per_ip, at least minAuditPerIP, or
// defaultAuditPerIP when the limit is off) of refusals recorded a minute,
// in this process: a client within its rate never loses one. Past it the
// refusal is answered as before and counted in the refusal metric, and
// the process says so in its log at most once a minute.
//
// principal is who the request proved to be, "" before a credential did.
// Refusals of no principal (the ACL's, the per-IP limit's, bad tokens)
// also share one allowance of all addresses together, auditAddresses
// times an address's: each address its own allowance let a client with
// many addresses (an IPv6 prefix holds 65,536 /64s per /48) add rows
// without bound, and it cost nothing but addresses. A principal's
// refusals are not in it, so such a flood does not hide them.
func (s *Server) recordRefusal(clientIP, principal string) bool {
	if !s.recordWithin(ipRateKey(clientIP), "client_ip", clientIP, 1) {
		return false
	}
	return principal != "" || s.recordWithin("every address", "clients", "every address without a credential", auditAddresses)
}

// auditAddresses is how many addresses' allowances the refusals of no
// principal from every address together have recorded a minute.
const auditAddresses = 10

// recordNATSRefusal is recordRefusal for a NATS submission, which has no
// client address: its refusals are counted against its principal once
// its token proved one, and before that against all unauthenticated NATS
// submissions together. A publisher choosing the subject, the
// Nats-Msg-Id and the token cannot give itself another allowance: keyed
// by subject, each orderly.submit.<made-up host> would have had its own.
// So a flood of bad-token messages records at most one allowance of rows
// a minute, and the rest is counted in the metric.
func (s *Server) recordNATSRefusal(principal string) bool {
	if principal == "" {
		return s.recordWithin("nats unauthenticated", "nats", "unauthenticated", 1)
	}
	return s.recordWithin("nats principal "+principal, "nats_principal", principal, 1)
}

// recordWithin spends one of key's recorded refusals this minute (keys
// of NATS submissions and of every address hold a space, which no
// address's does), of which key has times an address's allowance;
// logKey and logValue name who floods in the warning.
func (s *Server) recordWithin(key, logKey, logValue string, times int) bool {
	n := s.Settings().RatePerIP
	if n <= 0 {
		n = defaultAuditPerIP
	}
	n = max(n, minAuditPerIP) * times
	ok, _ := s.auditLimits.allow(key, n)
	if !ok {
		if last := s.auditWarned.Load(); time.Since(time.Unix(0, last)) > time.Minute && s.auditWarned.CompareAndSwap(last, time.Now().UnixNano()) {
			s.logger.Warn("refusals of a flooding client are counted, not each recorded in rejections", logKey, logValue, "per_minute", n)
		}
	}
	return ok
}

// RateCounter counts requests in windows shared by every API replica
// (queue.RateCounter over a NATS KV bucket).
type RateCounter interface {
	// Take counts one request: whether it is within limit, the requests
	// the window has left, and when the window ends.
	Take(ctx context.Context, scope, key string, limit int, now time.Time) (ok bool, remaining int, reset time.Time, err error)
}

// take applies a limit to key: across all replicas when limits.rate_shared
// is set (fixed one-minute windows), else in this process. If the shared
// counters are unreachable it limits in this process rather than letting
// everything through or refusing everything. A count that lost every
// race with the key's other requests is refused, not limited here: the
// bucket here has not been spent by what the shared count granted, so a
// client sending enough requests at once for its key got a second full
// allowance from each replica.
func (s *Server) take(ctx context.Context, local *rateLimiter, scope, key string, perMinute int) rateTake {
	if s.SharedLimits != nil && s.Settings().RateShared {
		now := time.Now()
		ok, remaining, reset, err := s.SharedLimits.Take(ctx, scope, key, perMinute, now)
		if err == nil {
			t := rateTake{ok: ok, limit: perMinute, remaining: remaining, reset: reset}
			if !ok {
				t.wait = reset.Sub(now)
			}
			return t
		}
		if errors.Is(err, queue.ErrRateContention) {
			return rateTake{limit: perMinute, reset: now.Add(time.Second), wait: time.Second}
		}
		if last := s.sharedWarned.Load(); time.Since(time.Unix(0, last)) > time.Minute && s.sharedWarned.CompareAndSwap(last, time.Now().UnixNano()) {
			s.logger.Warn("shared rate limits unavailable; limiting in this process", "error", err)
		}
	}
	return local.take(key, perMinute)
}

// rateHeadersKey marks a request of a surface whose original sent
// X-RateLimit-* headers (stage0, with Flask-Limiter).
type rateHeadersKey struct{}

// withRateHeaders makes the rate limits a request meets say what is left
// of them (setRateHeaders).
func withRateHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), rateHeadersKey{}, true)))
	})
}

func wantsRateHeaders(ctx context.Context) bool {
	on, _ := ctx.Value(rateHeadersKey{}).(bool)
	return on
}

// setRateHeaders writes Flask-Limiter's X-RateLimit-Limit, -Remaining and
// -Reset (the Unix second when the whole allowance is back) for t, unless
// a limit the request met before (per address, then per principal) has
// fewer requests left: as Flask-Limiter's, they describe the limit
// nearest to refusing.
func setRateHeaders(w http.ResponseWriter, t rateTake) {
	if t.limit <= 0 {
		return
	}
	// Set as Flask-Limiter spelled them: Header.Set would send
	// X-Ratelimit-*, which a client reading headers case-sensitively
	// misses.
	h := w.Header()
	if prev := h["X-RateLimit-Remaining"]; len(prev) == 1 {
		if n, err := strconv.Atoi(prev[0]); err == nil && n < t.remaining {
			return
		}
	}
	h["X-RateLimit-Limit"] = []string{strconv.Itoa(t.limit)}
	h["X-RateLimit-Remaining"] = []string{strconv.Itoa(t.remaining)}
	h["X-RateLimit-Reset"] = []string{strconv.FormatInt(int64(math.Ceil(float64(t.reset.UnixNano())/1e9)), 10)}
}
