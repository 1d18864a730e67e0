package compat

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/runbook"
)

// Stage0Runbooks is what the stage0 surface needs of the API
// (*api.Server): the native runbook code paths.
type Stage0Runbooks interface {
	RunbookList() ([]*runbook.Runbook, error)
	LoadRunbook(name string) (*runbook.Runbook, func(env map[string]string) []runbook.Problem, config.Runbooks, error)
	RunbookRuns(ctx context.Context, p auth.Principal, file string, limit int, fn func(*order.Order) error) error
	DelegatedPrincipal(ctx context.Context, token string) (auth.Principal, api.RunbookChain, error)
	RunRunbook(ctx context.Context, p auth.Principal, rr api.RunbookRun) (*order.Order, error)
	RunbookEnvRefused(rb *runbook.Runbook, env map[string]string) []runbook.Problem
	FollowOrder(ctx context.Context, o *order.Order, fn func(stream string, p []byte)) (*order.Order, error)
	// OutputCap is the output cap the worker that ran o recorded, when it
	// cut a stream of o's.
	OutputCap(ctx context.Context, o *order.Order) (limit int64, ok bool)
	CancelQueued(ctx context.Context, o *order.Order, actor, reason string)
	HoldStream(principal string) (release func(), err error)
}

// Stage0 is the stage0 runbook API (docs/compat.md): /api/runbooks...,
// /api/config, /api/shutdown and /dev-login, answering in stage0's
// formats. Each execute is the native RunRunbook: an ordinary order of
// kind script through intake, run by a worker, its history in PostgreSQL.
type Stage0 struct {
	Deps
	Runbooks Stage0Runbooks
	// Getenv reads the service's own environment: stage0 judged
	// required-env and validate there.
	Getenv func(name string) (string, bool)
	// Shutdown stops this API process (compat.stage0.shutdown).
	Shutdown func()
	// Now is the clock for tokens; nil is time.Now.
	Now func() time.Time
}

// historyRuns is how many runs a runbook's rendered History shows.
const historyRuns = 200

// stage0Request is one authenticated request.
type stage0Request struct {
	w      http.ResponseWriter
	r      *http.Request
	cfg    config.Config
	p      auth.Principal
	userID string
	claims map[string]any
	chain  api.RunbookChain
	ip     string
}

func (s *Stage0) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Stage0) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cfg := s.Config()
	sc := cfg.Compat.Stage0
	ip, ok := clientAddr(s.ACL(), r)
	if !ok {
		auditACL(s.Orders, r, ip, "stage0")
		stage0Error(w, http.StatusForbidden, "Access denied")
		return
	}
	// stage0's server (gunicorn) kept doubled slashes, leading ones too,
	// and Werkzeug's routing redirected to the path they merge into.
	merged := api.MergeSlashes(r.URL.Path)
	if merged == "/dev-login" {
		if !sc.EnableLogin {
			stage0Error(w, http.StatusNotFound, devLoginOff)
			return
		}
		if stage0Routed(w, r, merged, http.MethodPost, "") {
			return
		}
		if why := notLocal(r); why != "" {
			s.Orders.AuditRefusal(r.Context(), r, "", ip, "stage0", http.StatusForbidden,
				order.Errorf(order.CodeForbidden, "dev-login %s", why))
			stage0Error(w, http.StatusForbidden, "dev-login serves this machine only")
			return
		}
		s.devLogin(w, r, sc, cfg.HTTP.MaxBodyBytes)
		return
	}
	rel := strings.TrimPrefix(merged, strings.TrimSuffix(sc.Prefix, "/"))
	rt, file, ok := s.route(rel, sc)
	if !ok {
		msg := "Not found"
		if rel == "/shutdown" {
			msg = shutdownOff
		}
		stage0Error(w, http.StatusNotFound, msg)
		return
	}
	hint := ""
	if rt.book {
		hint = stage0MethodHint(r.Method, merged)
	}
	if stage0Routed(w, r, merged, rt.method, hint) {
		return
	}
	req, status, msg := s.authenticate(r, cfg)
	if status != 0 {
		s.Orders.AuditRefusal(r.Context(), r, "", ip, "stage0", status, order.Errorf(order.CodeUnauthenticated, "%s", msg))
		stage0Error(w, status, msg)
		return
	}
	if err := s.Orders.LimitPrincipal(w, r, req.p.Name, ip, "stage0"); err != nil {
		s.Refuse(w, http.StatusTooManyRequests, refusalText(err))
		return
	}
	if req.chain.Delegated && rt.method == http.MethodGet || rel == "/shutdown" && req.chain.Delegated {
		// A script's delegated token runs runbooks; it reads nothing.
		stage0Error(w, http.StatusForbidden, "a runbook token may only execute or validate runbooks")
		return
	}
	req.w, req.r, req.cfg, req.ip = w, r, cfg, ip
	rt.fn(req, file)
}

// The 404s of stage0's two routes that orderly leaves off by default
// name the setting: a client migrated from stage0, where both answered
// (its README's curl walk ends with /api/shutdown), is told why
// rather than "Not found".
const (
	devLoginOff = "Not found: /dev-login is off (compat.stage0.enable_login, on a loopback listen only)"
	shutdownOff = "Not found: /api/shutdown is off (compat.stage0.shutdown; orderly is not stopped by an API call otherwise)"
)

// stage0Route is a stage0 route: the method it serves and its view;
// book marks a runbook's own address, whose 405 names its /validate and
// /execute (stage0MethodHint).
type stage0Route struct {
	method string
	fn     func(*stage0Request, string)
	book   bool
}

// route is the route of rel, the path under the prefix, and the runbook
// file it names; false for none. A trailing slash is taken
// (docs/compat.md); /shutdown is none while compat.stage0.shutdown is off.
func (s *Stage0) route(rel string, sc config.Stage0Compat) (stage0Route, string, bool) {
	parts := strings.Split(strings.Trim(rel, "/"), "/")
	switch {
	case rel == "/shutdown":
		// Off by default: orderly is not stopped by an API call.
		return stage0Route{method: http.MethodPost, fn: s.shutdown}, "", sc.Shutdown
	case rel == "/config":
		return stage0Route{method: http.MethodGet, fn: s.config}, "", true
	case rel == "/runbooks":
		return stage0Route{method: http.MethodGet, fn: s.list}, "", true
	case len(parts) == 2 && parts[0] == "runbooks":
		return stage0Route{method: http.MethodGet, fn: s.get, book: true}, parts[1], true
	case len(parts) == 3 && parts[0] == "runbooks" && parts[2] == "required-env":
		return stage0Route{method: http.MethodGet, fn: s.requiredEnv}, parts[1], true
	case len(parts) == 3 && parts[0] == "runbooks" && parts[2] == "validate":
		return stage0Route{method: http.MethodPatch, fn: s.validate}, parts[1], true
	case len(parts) == 3 && parts[0] == "runbooks" && parts[2] == "execute":
		return stage0Route{method: http.MethodPost, fn: s.execute}, parts[1], true
	}
	return stage0Route{}, "", false
}

// authenticate applies stage0's bearer rules: a JWT signed with the
// shared secret whose iss and aud match, or the delegated token of a
// running script. It returns a status and stage0's message on failure.
func (s *Stage0) authenticate(r *http.Request, cfg config.Config) (*stage0Request, int, string) {
	sc := cfg.Compat.Stage0
	h := r.Header.Get("Authorization")
	if h == "Bearer" {
		// stage0 checked the "Bearer " prefix, then the stripped rest:
		// "Bearer " was an empty token. Go's server drops the trailing
		// space, so that header arrives as "Bearer".
		return nil, http.StatusUnauthorized, "Empty token in Authorization header"
	}
	if !strings.HasPrefix(h, "Bearer ") {
		return nil, http.StatusUnauthorized, "Missing or invalid Authorization header"
	}
	raw := strings.TrimSpace(h[len("Bearer "):])
	if raw == "" {
		return nil, http.StatusUnauthorized, "Empty token in Authorization header"
	}
	if api.IsDelegationToken(raw) {
		p, chain, err := s.Runbooks.DelegatedPrincipal(r.Context(), raw)
		if err != nil {
			return nil, http.StatusUnauthorized, "Token has expired"
		}
		return &stage0Request{p: p, userID: strings.TrimPrefix(p.Name, sc.PrincipalPrefix), chain: chain,
			claims: map[string]any{"sub": strings.TrimPrefix(p.Name, sc.PrincipalPrefix), "roles": p.Roles}}, 0, ""
	}
	claims := jwt.MapClaims{}
	// The library checks the signature; the claims are PyJWT's to judge.
	parser := jwt.NewParser(jwt.WithValidMethods([]string{sc.JWTAlgorithm}), jwt.WithoutClaimsValidation())
	tok, err := parser.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return []byte(sc.JWTSecret), nil })
	if err != nil {
		return nil, http.StatusUnauthorized, stage0JWTMessage(raw, tok, err, sc.JWTAlgorithm)
	}
	if msg := pyjwtClaims(claims, s.now(), sc.JWTIssuer, sc.JWTAudience); msg != "" {
		return nil, http.StatusUnauthorized, msg
	}
	sub, _ := claims["sub"].(string)
	if sub == "" {
		return nil, http.StatusUnauthorized, `Invalid token: Token is missing the "sub" claim`
	}
	// The principal's name and roles are recorded, logged and matched as
	// every principal's are: stage0 took any text, orderly takes what its
	// own tokens may hold (docs/compat.md).
	if !auth.ValidName(sub) {
		return nil, http.StatusUnauthorized, `Invalid token: The "sub" claim must be text of at most 256 bytes without control characters`
	}
	roles := stage0Roles(claims["roles"])
	for _, r := range roles {
		if !auth.ValidName(r) {
			return nil, http.StatusUnauthorized, `Invalid token: The "roles" claim must hold roles of at most 256 bytes without control characters`
		}
	}
	if msg := stage0Lifetime(claims, s.now(), sc.JWTTTL); msg != "" {
		return nil, http.StatusUnauthorized, msg
	}
	values := map[string][]string{}
	for k, v := range claims {
		var vals []string
		switch v := v.(type) {
		case string:
			vals = auth.ClaimStrings(v)
		case []any:
			vals = auth.ClaimStrings(v...)
		}
		if len(vals) > 0 {
			values[k] = vals
		}
	}
	p := auth.Principal{Name: sc.PrincipalPrefix + sub, Roles: roles, Kind: auth.KindJWT, Claims: values}
	return &stage0Request{p: p, userID: sub, claims: claims, chain: api.HeaderChain(r)}, 0, ""
}

// notLocal says why a /dev-login request is not one of this machine's
// own clients, or "" when it is. The listener is loopback (the config
// refuses enable_login otherwise), but a reverse proxy on the same
// machine connects from loopback too and would hand anyone a token with
// any roles: a proxied request says so (Forwarded, X-Forwarded-For,
// X-Real-IP). A browser's request from another origin is refused too: a
// page must not sign its visitor's browser in, even if it cannot read
// the answer; so is one by a name other than localhost (byName), which
// a page of another site rebound to 127.0.0.1 sends as its own.
func notLocal(r *http.Request) string {
	for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Real-IP"} {
		if r.Header.Get(h) != "" {
			return "came through a proxy (" + h + ")"
		}
	}
	if err := crossOrigin(r); err != nil {
		return "came from another origin in a browser"
	}
	if byName(r) != nil {
		return "came from a browser by the name " + strconv.Quote(r.Host) + " (a page whose name was rebound to this machine is same-origin to the browser)"
	}
	return ""
}

// stage0Roles reads the roles claim as stage0 did: a list kept, a string
// split on commas and trimmed, anything else none.
func stage0Roles(v any) []string {
	roles := []string{}
	switch v := v.(type) {
	case []any:
		for _, item := range v {
			if s, ok := item.(string); ok {
				roles = append(roles, s)
			}
		}
	case string:
		for _, s := range strings.Split(v, ",") {
			if s = pyStrip(s); s != "" {
				roles = append(roles, s)
			}
		}
	}
	return roles
}

// stage0JWTMessage is stage0's 401 message for a token whose header or
// signature failed: "Invalid token: " and PyJWT's words. A token that does
// not decode gets a generic message: PyJWT's embeds Python's base64 and
// json errors (docs/compat.md). alg is the one algorithm allowed
// (compat.stage0.jwt_algorithm).
func stage0JWTMessage(raw string, tok *jwt.Token, err error, alg string) string {
	if tok != nil && tok.Header != nil && !errors.Is(err, jwt.ErrTokenMalformed) {
		// PyJWT judges alg before the signature; jwt/v5 calls a refused
		// alg a bad signature.
		sent, ok := tok.Header["alg"]
		switch {
		case !ok:
			return "Invalid token: Algorithm not specified"
		case sent != alg:
			return "Invalid token: The specified alg value is not allowed"
		}
	}
	switch {
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "Invalid token: Signature verification failed"
	case strings.Count(raw, ".") != 2:
		return "Invalid token: Not enough segments"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "Invalid token: The specified alg value is not allowed"
	}
	return "Invalid token: Invalid token"
}

// pyjwtClaims judges a verified token's claims as PyJWT 2.10.1's
// _validate_claims did for stage0 (no leeway, nothing required but iss and
// aud), in its order: iat, nbf, exp, iss, aud, sub, jti. It returns
// stage0's 401 message, or "" when the claims pass.
func pyjwtClaims(c jwt.MapClaims, now time.Time, issuer, audience string) string {
	t := float64(now.UnixNano()) / 1e9
	for _, tc := range []struct {
		claim, notInt string
		bad           func(v float64) bool
		msg           string
	}{
		{"iat", "Issued At claim (iat) must be an integer.", func(v float64) bool { return v > t }, "Invalid token: The token is not yet valid (iat)"},
		{"nbf", "Not Before claim (nbf) must be an integer.", func(v float64) bool { return v > t }, "Invalid token: The token is not yet valid (nbf)"},
		{"exp", "Expiration Time claim (exp) must be an integer.", func(v float64) bool { return v <= t }, "Token has expired"},
	} {
		raw, ok := c[tc.claim]
		if !ok {
			continue
		}
		v, typeErr, ok := pyInt(raw)
		switch {
		case typeErr != "":
			// int() raised TypeError, which stage0 caught as any error.
			return "Error decoding token: " + typeErr
		case !ok:
			return "Invalid token: " + tc.notInt
		case tc.bad(v):
			return tc.msg
		}
	}
	iss, ok := c["iss"]
	if !ok {
		return `Invalid token: Token is missing the "iss" claim`
	}
	if s, ok := iss.(string); !ok || s != issuer {
		return "Invalid token: Invalid issuer"
	}
	aud, ok := c["aud"]
	if !ok || !pyTruthy(aud) {
		return `Invalid token: Token is missing the "aud" claim`
	}
	var auds []any
	switch a := aud.(type) {
	case string:
		auds = []any{a}
	case []any:
		auds = a
	default:
		return "Invalid token: Invalid claim format in token"
	}
	match := false
	for _, a := range auds {
		s, ok := a.(string)
		if !ok {
			return "Invalid token: Invalid claim format in token"
		}
		match = match || s == audience
	}
	if !match {
		return "Invalid token: Audience doesn't match"
	}
	if sub, ok := c["sub"]; ok {
		if _, ok := sub.(string); !ok {
			return "Invalid token: Subject must be a string"
		}
	}
	if jti, ok := c["jti"]; ok {
		if _, ok := jti.(string); !ok {
			return "Invalid token: JWT ID must be a string"
		}
	}
	return ""
}

// stage0ClockSlack is how far ahead of this replica's clock the one that
// minted a token may be: exp - now is bounded by the lifetime and this.
const stage0ClockSlack = time.Minute

// stage0Lifetime refuses a token stage0 would have taken for ever: one
// without exp (PyJWT checked exp only when present), or one that lives
// longer than compat.stage0.jwt_ttl, /dev-login's own lifetime: exp
// further than that from iat or nbf when present, or from now. A leaked
// token of stage0's secret was good until its exp, or for good without
// one. pyjwtClaims has read each time claim as Python's int().
func stage0Lifetime(c jwt.MapClaims, now time.Time, ttl time.Duration) string {
	if _, ok := c["exp"]; !ok {
		return `Invalid token: Token is missing the "exp" claim`
	}
	exp, _, _ := pyInt(c["exp"])
	tooLong := "Invalid token: The token lives longer than " + ttl.String() + " (compat.stage0.jwt_ttl)"
	if exp-float64(now.Unix()) > (ttl + stage0ClockSlack).Seconds() {
		return tooLong
	}
	for _, claim := range []string{"iat", "nbf"} {
		if raw, ok := c[claim]; ok {
			if start, _, _ := pyInt(raw); exp-start > ttl.Seconds() {
				return tooLong
			}
		}
	}
	return ""
}

// pyInt is Python's int() of a JSON value, as a float for comparing with
// a time: a number truncated, a bool 0 or 1, a string of an integer
// (spaces around, a sign, _ between digits, which may be any script's
// decimal digits: "١٢" is 12). ok is false where int()
// raised ValueError; typeErr is the TypeError it raised for null, a list
// or an object.
func pyInt(v any) (n float64, typeErr string, ok bool) {
	switch v := v.(type) {
	case float64:
		return math.Trunc(v), "", true
	case bool:
		if v {
			return 1, "", true
		}
		return 0, "", true
	case string:
		s, neg := pyDecimals(strings.TrimSpace(v)), false
		if s != "" && (s[0] == '+' || s[0] == '-') {
			s, neg = s[1:], s[0] == '-'
		}
		if s == "" || s[0] == '_' || s[len(s)-1] == '_' || strings.Contains(s, "__") ||
			strings.Trim(s, "0123456789_") != "" {
			return 0, "", false
		}
		f, err := strconv.ParseFloat(strings.ReplaceAll(s, "_", ""), 64)
		if err != nil {
			return 0, "", false
		}
		if neg {
			f = -f
		}
		return f, "", true
	}
	name := "NoneType"
	switch v.(type) {
	case []any:
		name = "list"
	case map[string]any:
		name = "dict"
	}
	return 0, "int() argument must be a string, a bytes-like object or a real number, not '" + name + "'", false
}

// stage0Error answers with stage0's envelope {"error": msg}.
// Refuse writes a refusal in stage0's {"error": msg} (api.CompatRefuser,
// for limits.rate_per_ip).
func (s *Stage0) Refuse(w http.ResponseWriter, status int, msg string) { stage0Error(w, status, msg) }

// Source is the surface's name on record (api.CompatRefuser).
func (s *Stage0) Source() string { return "stage0" }

// InternalError is stage0's 500 for an unexpected failure (api.CompatRefuser).
func (s *Stage0) InternalError(w http.ResponseWriter) {
	stage0Error(w, http.StatusInternalServerError, "A processing error occurred")
}

func stage0Error(w http.ResponseWriter, status int, msg string) {
	writePyJSON(w, status, map[string]any{"error": msg})
}

// stage0Fail is execute's JSON refusal before any stream: it carries
// "success": false too.
func stage0Fail(w http.ResponseWriter, status int, msg string) {
	writePyJSON(w, status, map[string]any{"success": false, "error": msg})
}

// statusFor maps a refusal of the pipeline to a status and message. A
// refusal of the request keeps its status under the API's error map (401,
// 403, 404, 429, and 400, 409, 413 or 422 for input stage0 had no limit
// on, never a 500: that is a server failure to its client and to the
// request metrics); a request of r whose client closed its side first is
// 400 (api.ClientClosed); anything else is stage0's 500.
func statusFor(r *http.Request, err error) (int, string) {
	err = api.ClientClosed(r, err) // its half closed: 400, not 500
	var e *order.Error
	if !errors.As(err, &e) || e.Code == order.CodeInternal {
		return http.StatusInternalServerError, "A processing error occurred"
	}
	if status := api.HTTPStatus(err); status < http.StatusInternalServerError {
		return status, e.Message
	}
	return http.StatusInternalServerError, e.Message
}

// reasonOf is the details.reason of a runbook refusal.
func reasonOf(err error) string {
	if e := asOrderError(err); e != nil && e.Details != nil {
		r, _ := e.Details["reason"].(string)
		return r
	}
	return ""
}

func asOrderError(err error) *order.Error {
	var e *order.Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// pyDecimals writes the decimal digits of any script in s (Unicode's Nd,
// which Python's int() reads) as ASCII digits. strings.TrimSpace already
// strips what int() strips: the same white space outside ASCII, and in
// ASCII only " \t\n\v\f\r".
func pyDecimals(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		ascii = ascii && s[i] < utf8.RuneSelf
	}
	if ascii {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if r >= utf8.RuneSelf && unicode.IsDigit(r) {
			// Unicode assigns decimal digits only in runs of ten, 0 to 9,
			// so a digit's value is how many digits precede it in its run,
			// modulo ten.
			n := 0
			for p := r - 1; unicode.IsDigit(p); p-- {
				n++
			}
			r = '0' + rune(n%10)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// stage0MethodHint is what a 405 adds for the two requests stage0's own
// README shows and its server refused: PATCH or POST on a runbook's
// address (/api/runbooks/<f>), where validate and execute are the
// address's /validate and /execute. A client copied from that README
// gets the route it meant, not a bare 405 (docs/compat.md).
func stage0MethodHint(sent, merged string) string {
	to := strings.TrimSuffix(merged, "/")
	switch sent {
	case http.MethodPatch:
		return ": to validate a runbook, send PATCH " + to + "/validate"
	case http.MethodPost:
		return ": to execute a runbook, send POST " + to + "/execute"
	}
	return ""
}

// stage0Routed answers what Flask and Werkzeug answered for a path that
// matched a route taking method, before stage0's view ran (so before the
// token): 405 for another method, the 308 to the path the slashes merge
// into, and OPTIONS, which Flask answered itself in place of the view. It
// reports whether it answered.
func stage0Routed(w http.ResponseWriter, r *http.Request, merged, method, hint string) bool {
	switch {
	case !flaskMethodOK(r.Method, method):
		w.Header().Set("Allow", flaskAllow(method))
		stage0Error(w, http.StatusMethodNotAllowed, "Method not allowed"+hint)
	case merged != r.URL.Path:
		werkzeugRedirect(w, r, merged)
	case r.Method == http.MethodOptions:
		flaskOptions(w, method)
	default:
		return false
	}
	return true
}
