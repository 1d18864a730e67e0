package compat

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/runbook"
)

// list is GET /api/runbooks: top-level *.md files whose text starts with
// "# ", sorted by file name; others are left out, as stage0 did.
func (s *Stage0) list(q *stage0Request, _ string) {
	all, err := s.Runbooks.RunbookList()
	if err != nil {
		code, msg := statusFor(q.r, err)
		stage0Error(q.w, code, msg)
		return
	}
	out := []map[string]any{}
	for _, rb := range all {
		if !bytes.HasPrefix(rb.Text, []byte("# ")) {
			continue
		}
		out = append(out, map[string]any{"filename": rb.File, "name": rb.Name, "path": rb.File})
	}
	writePyJSON(q.w, http.StatusOK, map[string]any{"success": true, "runbooks": out})
}

// load reads a runbook or answers stage0's 404.
func (s *Stage0) load(q *stage0Request, file string, fail func(http.ResponseWriter, int, string)) (*runbook.Runbook, func(map[string]string) []runbook.Problem, bool) {
	rb, check, _, err := s.Runbooks.LoadRunbook(file)
	if order.ErrorCode(err) == order.CodeNotFound {
		fail(q.w, http.StatusNotFound, "Runbook not found: "+file)
		return nil, nil, false
	}
	if err != nil {
		code, msg := statusFor(q.r, err)
		fail(q.w, code, msg)
		return nil, nil, false
	}
	return rb, check, true
}

// get is GET /api/runbooks/<f>: the file, then its History rendered from
// PostgreSQL in stage0's markdown, as a stage0 client expects to read it:
// the runs the caller may read (api.Server.RunbookRuns). The answer is
// written a run at a time: 200 runs of large outputs made one string of
// them all before.
func (s *Stage0) get(q *stage0Request, file string) {
	rb, _, ok := s.load(q, file, stage0Error)
	if !ok {
		return
	}
	if rb.TooLarge() {
		// Not read: an empty content would pass for the file's.
		stage0Error(q.w, http.StatusUnprocessableEntity, rb.Problems[0].Message)
		return
	}
	// stage0 answered "name or filename": a file without a leading H1
	// (which the list leaves out) is named by its file.
	head, tail := pyJSONAround(map[string]any{"success": true, "filename": rb.File, "name": cmp.Or(rb.Name, rb.File), "content": ""}, "content")
	started := false
	start := func() {
		if !started {
			started = true
			q.w.Header().Set("Content-Type", "application/json")
			q.w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(q.w, head)
			// stage0 read the file in text mode: CRLF and a lone CR are LF.
			_ = writePyJSONText(q.w, universalNewlines(string(rb.Text)))
		}
	}
	err := s.Runbooks.RunbookRuns(q.r.Context(), q.p, rb.File, historyRuns, func(o *order.Order) error {
		start()
		return writePyJSONText(q.w, renderRun(o, q.cfg.Compat.Stage0.PrincipalPrefix))
	})
	switch {
	case err != nil && !started:
		code, msg := statusFor(q.r, err)
		stage0Error(q.w, code, msg)
	case err != nil:
		// Part of the answer is out: end the connection rather than let
		// a cut History pass for the whole one.
		panic(http.ErrAbortHandler)
	default:
		start()
		_, _ = io.WriteString(q.w, tail)
	}
}

// renderRun is one history entry as stage0 appended it to the file.
func renderRun(o *order.Order, prefix string) string {
	if !o.Status.Terminal() {
		return ""
	}
	at := o.SubmittedAt
	if o.FinishedAt != nil {
		at = *o.FinishedAt
	}
	var b strings.Builder
	fence := func(title, text string) {
		if text == "" {
			return
		}
		fmt.Fprintf(&b, "**%s:**\n```\n%s\n```\n\n", title, strings.ReplaceAll(strings.TrimRight(text, "\n"), "```", "\\`\\`\\`"))
	}
	errText := ""
	if o.Result != nil {
		errText = o.Result.Error
	}
	if o.Status == order.StatusRejected && strings.HasPrefix(errText, "RBAC check failed for ") {
		fmt.Fprintf(&b, "\n### %s | Exit Code: 403\n\n", stage0Time(at))
		fence("Error", "RBAC Failure: Access denied for user "+strings.TrimPrefix(o.Principal, prefix)+". "+errText)
		return b.String()
	}
	rc, stdout, stderr := runOutcome(o)
	fmt.Fprintf(&b, "\n### %s | Exit Code: %d\n\n", stage0Time(at), rc)
	fence("Stdout", stdout)
	fence("Stderr", stderr)
	return b.String()
}

// stage0Time is stage0's history timestamp: UTC with milliseconds and Z.
func stage0Time(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// runOutcome is a finished order as stage0 reported a run: its return
// code, stdout and stderr as a text-mode pipe read them, and stage0's
// note after stderr.
func runOutcome(o *order.Order) (rc int, stdout, stderr string) {
	rc, note := runEnd(o)
	return rc, storedOutput(o, "stdout"), storedOutput(o, "stderr") + note
}

// runEnd is how a finished order ended as stage0 reported a run: the
// return code (the exit status, minus the signal, -9 on timeout, 1 when
// it did not run) and the note stage0 added to stderr, if any.
func runEnd(o *order.Order) (rc int, note string) {
	res := o.Result
	if res == nil {
		return 1, ""
	}
	switch code, ok := returnCode(res); {
	case o.Status == order.StatusTimedOut:
		// Newlines included: stage0 sent it as an event of its own.
		return -9, fmt.Sprintf("\nScript execution timed out after %d seconds. The script was terminated.\n", int(o.Timeout/time.Second))
	case ok:
		return code, ""
	case res.Error != "":
		return 1, res.Error + "\n"
	}
	return 1, ""
}

// requiredEnv is GET /api/runbooks/<f>/required-env, judged on the
// service's own environment as stage0 did: available and missing hold the
// same {name, description} objects as required, and a variable set to ""
// is missing there (stage0 tested os.environ[var] for truth), though
// validate counts it as set.
func (s *Stage0) requiredEnv(q *stage0Request, file string) {
	rb, _, ok := s.load(q, file, stage0Error)
	if !ok {
		return
	}
	required, available, missing := []map[string]string{}, []map[string]string{}, []map[string]string{}
	for _, v := range rb.Env {
		info := map[string]string{"name": v.Name, "description": v.Description}
		required = append(required, info)
		if val, _ := s.getenv(v.Name); val != "" {
			available = append(available, info)
		} else {
			missing = append(missing, info)
		}
	}
	writePyJSON(q.w, http.StatusOK, map[string]any{"success": true, "filename": rb.File, "required": required,
		"available": available, "missing": missing})
}

// getenv reads a variable of the service's environment for a runbook that
// declares it, as stage0 did, except orderly's own (ORDERLY_*, in any
// case): they configure the API (a database URL with its password, a
// token), and a runbook that declared one would print it to whoever runs
// the runbook.
func (s *Stage0) getenv(name string) (string, bool) {
	if s.Getenv == nil || len(name) >= len("ORDERLY_") && strings.EqualFold(name[:len("ORDERLY_")], "ORDERLY_") {
		return "", false
	}
	return s.Getenv(name)
}

// stage0Body is the body of validate and execute.
type stage0Body struct {
	EnvVars map[string]json.RawMessage `json:"env_vars"`
}

// readBody reads an optional JSON body; stage0 accepted none at all, and
// read a falsy one (`[]`, `0`, `false`, `""`, `null`) as none
// (docs/decisions.md, tenth round). A refused body comes with its status:
// 413 past http.max_body_bytes (stage0 had no limit; orderly's answers
// 413, as its other surfaces and the native API do), else 400.
func readBody(r *http.Request, max int64) (stage0Body, int, error) {
	var b stage0Body
	if r.ContentLength > max { // refused unread, before "100 Continue"
		return b, http.StatusRequestEntityTooLarge, errors.New("Request body too large")
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		// A body cut short (a chunked one that stops, a connection
		// closed) is one that cannot be read, not one too large.
		return b, http.StatusBadRequest, errors.New("Invalid JSON body")
	}
	if int64(len(data)) > max {
		return b, http.StatusRequestEntityTooLarge, errors.New("Request body too large")
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return b, 0, nil
	}
	if err := pyUnmarshal(data, &b); err != nil {
		if falsyJSON(data) || falsyEnvVars(data) {
			return stage0Body{}, 0, nil
		}
		return b, http.StatusBadRequest, errors.New("Invalid JSON body")
	}
	return b, 0, nil
}

// falsyEnvVars reports whether data is an object whose env_vars is a
// falsy value that is not an object (`[]`, `0`, `false`, `""`): read as
// no variables, as a falsy body is (docs/decisions.md, eleventh round),
// where a truthy one that is not an object stays 400.
func falsyEnvVars(data []byte) bool {
	var raw struct {
		EnvVars json.RawMessage `json:"env_vars"`
	}
	return pyUnmarshal(data, &raw) == nil && len(raw.EnvVars) > 0 && falsyJSON(raw.EnvVars)
}

// falsyJSON reports whether data is one JSON value that Python's bool()
// finds false, read as Flask read it.
func falsyJSON(data []byte) bool {
	text, err := flaskText(data)
	if err != nil {
		return false
	}
	v, err := pyLoads(text)
	return err == nil && !pyTruthy(v)
}

// validate is PATCH /api/runbooks/<f>/validate: 200 when the runbook
// would run with these env_vars (or the service's environment), else 400;
// both {success, runbook, errors, warnings}. Claims first (403).
func (s *Stage0) validate(q *stage0Request, file string) {
	rb, check, ok := s.load(q, file, stage0Error)
	if !ok {
		return
	}
	if msg := rb.CheckClaims(runbook.OpValidate, claimsOf(q)); msg != "" {
		s.Orders.AuditRefusal(q.r.Context(), q.r, q.p.Name, q.ip, "stage0", http.StatusForbidden, order.Errorf(order.CodeForbidden, "%s", msg))
		stage0Error(q.w, http.StatusForbidden, msg)
		return
	}
	body, status, err := readBody(q.r, q.cfg.HTTP.MaxBodyBytes)
	if err != nil {
		stage0Error(q.w, status, err.Error())
		return
	}
	errs := []string{}
	env, err := runbook.Sanitize(body.EnvVars)
	if err != nil {
		errs = append(errs, err.Error())
		env = wellNamed(body.EnvVars)
	}
	for _, v := range rb.Env {
		if _, set := env[v.Name]; !set {
			if val, ok := s.getenv(v.Name); ok {
				env[v.Name] = val
			}
		}
	}
	errs = append(errs, runbook.Messages(check(env))...)
	errs = append(errs, runbook.Messages(s.Runbooks.RunbookEnvRefused(rb, env))...)
	status = http.StatusOK
	if len(errs) > 0 {
		status = http.StatusBadRequest
	}
	writePyJSON(q.w, status, map[string]any{"success": len(errs) == 0, "runbook": rb.File, "errors": errs,
		"warnings": nonNil(rb.Warnings)})
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// claimsOf is what the principal holds for Required Claims, roles as
// parsed.
func claimsOf(q *stage0Request) map[string][]string {
	out := map[string][]string{}
	for k, v := range q.p.Claims {
		out[k] = v
	}
	out["roles"] = q.p.Roles
	return out
}

// config is GET /api/config: stage0's settings as orderly has them, the
// secret masked, and the caller's token.
func (s *Stage0) config(q *stage0Request, _ string) {
	c, sc := q.cfg, q.cfg.Compat.Stage0
	item := func(name, value, def string) map[string]string {
		from := "environment"
		if value == def {
			from = "default"
		}
		return map[string]string{"name": name, "value": value, "from": from}
	}
	items := []map[string]string{
		item("RUNBOOKS_DIR", c.Runbooks.Dir, "./samples/runbooks"),
		item("ENABLE_LOGIN", strings.ToLower(strconv.FormatBool(sc.EnableLogin)), "false"),
		{"name": "JWT_SECRET", "value": "secret", "from": "environment"},
		item("JWT_ALGORITHM", sc.JWTAlgorithm, "HS256"),
		item("JWT_ISSUER", sc.JWTIssuer, "dev-idp"),
		item("JWT_AUDIENCE", sc.JWTAudience, "dev-api"),
		item("JWT_TTL_MINUTES", strconv.Itoa(int(sc.JWTTTL/time.Minute)), "480"),
		item("SCRIPT_TIMEOUT_SECONDS", strconv.Itoa(int(c.Runbooks.Timeout/time.Second)), "600"),
		item("MAX_OUTPUT_SIZE_BYTES", strconv.FormatInt(c.Worker.MaxOutputBytes, 10), "10485760"),
		item("MAX_RECURSION_DEPTH", strconv.Itoa(c.Runbooks.MaxDepth), "50"),
	}
	writePyJSON(q.w, http.StatusOK, map[string]any{"config_items": items,
		"token": map[string]any{"user_id": q.userID, "roles": nonNil(q.p.Roles), "remote_ip": q.ip, "claims": q.claims}})
}

// shutdown is POST /api/shutdown, served only with compat.stage0.shutdown,
// and only for a principal with the admin role: stage0 stopped for any
// valid token, so every runbook user could take the API down for all.
// Stopping the process is more than reloading it, which needs the admin
// role on every surface (POST /v1/admin/reload, Vigrid's /reload).
func (s *Stage0) shutdown(q *stage0Request, _ string) {
	if !q.p.HasRole("admin") {
		s.Orders.AuditRefusal(q.r.Context(), q.r, q.p.Name, q.ip, "stage0", http.StatusForbidden,
			order.Errorf(order.CodeForbidden, "shutting down needs the admin role"))
		stage0Error(q.w, http.StatusForbidden, "Shutting down needs the admin role")
		return
	}
	writePyJSON(q.w, http.StatusOK, map[string]any{"message": "Shutdown initiated"})
	if s.Shutdown != nil {
		go s.Shutdown()
	}
}

// devLoginMaxBody is the most a /dev-login body may hold (less when
// http.max_body_bytes is less): a subject and a list of roles.
const devLoginMaxBody = 64 << 10

// devLogin is POST /dev-login: a token for any subject and roles, served
// only with compat.stage0.enable_login on a loopback listener. A body
// past its limit is 413, as validate's and execute's are: cut at the
// limit, it read as malformed JSON (400).
func (s *Stage0) devLogin(w http.ResponseWriter, r *http.Request, sc config.Stage0Compat, maxBody int64) {
	var body struct {
		Subject *string  `json:"subject"`
		Roles   []string `json:"roles"`
	}
	maxBody = min(maxBody, devLoginMaxBody)
	if r.ContentLength > maxBody { // refused unread, before "100 Continue"
		stage0Error(w, http.StatusRequestEntityTooLarge, "Request body too large")
		return
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil { // cut short: unreadable, not too large
		stage0Error(w, http.StatusBadRequest, "Invalid JSON body")
		return
	}
	if int64(len(data)) > maxBody {
		stage0Error(w, http.StatusRequestEntityTooLarge, "Request body too large")
		return
	}
	if len(bytes.TrimSpace(data)) > 0 && pyUnmarshal(data, &body) != nil {
		stage0Error(w, http.StatusBadRequest, "Invalid JSON body")
		return
	}
	subject := "dev-user-1"
	if body.Subject != nil && *body.Subject != "" {
		subject = *body.Subject
	}
	roles := body.Roles
	if roles == nil {
		roles = []string{"developer"}
	}
	now := s.now().UTC()
	exp := now.Add(sc.JWTTTL)
	tok, err := jwt.NewWithClaims(jwt.GetSigningMethod(sc.JWTAlgorithm), jwt.MapClaims{"sub": subject, "roles": roles,
		"iss": sc.JWTIssuer, "aud": sc.JWTAudience, "iat": now.Unix(), "nbf": now.Unix(), "exp": exp.Unix()}).
		SignedString([]byte(sc.JWTSecret))
	if err != nil {
		stage0Error(w, http.StatusInternalServerError, "A processing error occurred")
		return
	}
	writePyJSON(w, http.StatusOK, map[string]any{"access_token": tok, "token_type": "bearer",
		"expires_at": pyISOFormat(exp), "subject": subject, "roles": roles})
}

// pyISOFormat writes t (UTC) as Python's datetime.isoformat() wrote
// stage0's expires_at: microseconds only when there are some
// ("2026-12-05T10:25:42.523353+00:00", "2026-12-05T10:25:42+00:00").
func pyISOFormat(t time.Time) string {
	if t.Nanosecond()/1000 == 0 {
		return t.Format("2006-01-02T15:04:05") + "+00:00"
	}
	return t.Format("2006-01-02T15:04:05.000000") + "+00:00"
}
