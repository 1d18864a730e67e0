package compat

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/order"
)

// HTTPExec is httpexec's POST /<command path> (docs/compat.md). Requests
// are unauthenticated: each acts as compat.httpexec.principal, and
// config validation refuses the surface unless acl.allow restricts who can
// reach it.
type HTTPExec struct {
	Deps
	// Wait bounds how long a request waits for its order; httpexec itself
	// waited for ever.
	Wait func() time.Duration
}

// httpexecStream is one captured stream of the response.
type httpexecStream struct {
	Content string  `json:"content"`
	Encode  *string `json:"encode"`
}

// httpexecResponse has its keys in the order Quart sorted them.
type httpexecResponse struct {
	Return int             `json:"return"`
	Stderr *httpexecStream `json:"stderr"`
	Stdout *httpexecStream `json:"stdout"`
}

// httpexecAllow is the methods of httpexec's one route: POST, and the
// OPTIONS Quart adds to every route.
const httpexecAllow = "OPTIONS, POST"

// errHTTPExecInput is a body httpexec raised on (a null args list or
// stream, an unknown encoding, a non-string value): its 500, a 400 here.
var errHTTPExecInput = errors.New("httpexec: unusable request")

func (h *HTTPExec) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cfg := h.Config()
	hc := cfg.Compat.HTTPExec
	ip, ok := clientAddr(h.ACL(), r)
	if !ok {
		auditACL(h.Orders, r, ip, "httpexec")
		plain(w, http.StatusForbidden, "text/plain; charset=utf-8", "client address not allowed\n")
		return
	}
	// No credential protects these requests, and a POST that is not JSON
	// runs its command bare: any page a person inside acl.allow opens
	// could send one (a form, a no-cors fetch: "simple" requests, which a
	// browser sends cross-origin without asking). A browser's
	// cross-origin or cross-site request is refused; scripts send
	// neither Sec-Fetch-Site nor Origin and are not affected.
	if err := crossOrigin(r); err != nil {
		h.Orders.AuditRefusal(r.Context(), r, hc.Principal, ip, "httpexec", http.StatusForbidden,
			order.Errorf(order.CodeForbidden, "cross-origin request from a browser (Origin %q, Sec-Fetch-Site %q)",
				r.Header.Get("Origin"), r.Header.Get("Sec-Fetch-Site")))
		plain(w, http.StatusForbidden, "text/plain; charset=utf-8", "cross-origin request refused\n")
		return
	}
	if err := byName(r); err != nil {
		h.Orders.AuditRefusal(r.Context(), r, hc.Principal, ip, "httpexec", http.StatusForbidden,
			order.Errorf(order.CodeForbidden, "%s", err))
		plain(w, http.StatusForbidden, "text/plain; charset=utf-8", "browser request by name refused: use an IP address or localhost\n")
		return
	}
	rel := strings.TrimLeft(strings.TrimPrefix(r.URL.Path, strings.TrimSuffix(hc.Prefix, "/")), "/")
	if rel == "" {
		// No route of httpexec's matches "/", whatever the method.
		quartError(w, http.StatusNotFound, "Not Found", "The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.")
		return
	}
	if r.Method == http.MethodOptions {
		// Quart answers OPTIONS on every route itself, before the view
		// (so before any lookup): 200, no body.
		w.Header().Set("Allow", httpexecAllow)
		plain(w, http.StatusOK, "text/html; charset=utf-8", "")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", httpexecAllow)
		quartError(w, http.StatusMethodNotAllowed, "Method Not Allowed", "The method is not allowed for the requested URL.")
		return
	}
	// Every request acts as the one principal: its allowance is theirs.
	if err := h.Orders.LimitPrincipal(w, r, hc.Principal, ip, "httpexec"); err != nil {
		h.Refuse(w, http.StatusTooManyRequests, refusalText(err))
		return
	}
	path, found, err := resolveHTTPExec(hc.ExecRoot, hc.FollowLinks, rel)
	if err != nil {
		quart500(w)
		return
	}
	if !found {
		plain(w, http.StatusNotFound, "text/html; charset=utf-8", fmt.Sprintf("Command `%s` not found", path))
		return
	}
	o, status := h.order(r, path, cfg.HTTP.MaxBodyBytes)
	if status != 0 {
		// Refused before an order exists: on record, as the native
		// API's refusals and the other surfaces' are.
		switch status {
		case http.StatusBadRequest:
			h.Orders.AuditRefusal(r.Context(), r, hc.Principal, ip, "httpexec", status, order.Errorf(order.CodeInvalid, "invalid JSON body"))
			quartError(w, http.StatusBadRequest, "Bad Request", "The browser (or proxy) sent a request that this server could not understand.")
		case http.StatusRequestEntityTooLarge:
			h.Orders.AuditRefusal(r.Context(), r, hc.Principal, ip, "httpexec", status,
				order.Errorf(order.CodeTooLarge, "request body is larger than %d bytes", cfg.HTTP.MaxBodyBytes))
			quartError(w, status, "Request Entity Too Large", "The data value transmitted exceeds the capacity limit.")
		default:
			// httpexec raised on such a body (Quart's 500); bad input is
			// a 400 here, Quart's own page for one: a 500 calls the
			// client's mistake a server failure, which clients and
			// proxies that retry on 5xx send again for ever.
			h.Orders.AuditRefusal(r.Context(), r, hc.Principal, ip, "httpexec", http.StatusBadRequest,
				order.Errorf(order.CodeInvalid, "the body is not a request httpexec could run"))
			quartError(w, http.StatusBadRequest, "Bad Request", "The browser (or proxy) sent a request that this server could not understand.")
		}
		return
	}
	o.Host, o.Source = hc.Host, "httpexec"
	h.Orders.BindWaiter(o)
	p := auth.Principal{Name: hc.Principal, Roles: hc.Roles}
	wait := 24 * time.Hour
	if h.Wait != nil {
		wait = h.Wait()
	}
	// httpexec had no credential: what admits a request is acl.allow
	// and the surface's principal. A reload that takes either away ends
	// the wait (api.WithCredentialCheck), as a revoked token ends a
	// native one: the order goes on, nothing more is answered.
	var revoked string
	ctx := api.WithCredentialCheck(r.Context(), func() bool {
		revoked = h.revoked(r, hc.Principal)
		return revoked != ""
	})
	done, err := h.Orders.SubmitOrder(ctx, p, o, wait)
	if id, ok := api.CredentialGone(err); ok {
		h.Orders.AuditRefusal(r.Context(), r, p.Name, ip, "httpexec", http.StatusForbidden, err)
		plain(w, http.StatusForbidden, "text/plain; charset=utf-8",
			revoked+": order "+id.String()+" was accepted and goes on; read it through the API\n")
		return
	}
	if np, ok := unqueued(err); ok {
		// Recorded, but the bus refused it: the answer is a failure, so
		// the order must not run later when the reconciler queues it.
		if err := withdraw(r.Context(), h.Orders, np, p); err != nil {
			plain(w, apiStatus(err), "text/plain; charset=utf-8", refusalText(err)+"\n")
			return
		}
		plain(w, http.StatusServiceUnavailable, "text/plain; charset=utf-8",
			"order "+np.ID.String()+" could not be queued: the message bus is unavailable; canceled\n")
		return
	}
	if err != nil {
		code := apiStatus(err)
		if code >= 400 && code < 500 {
			h.Orders.AuditRefusal(r.Context(), r, p.Name, ip, "httpexec", code, err)
		}
		retryAfter(w, err)
		plain(w, code, "text/plain; charset=utf-8", refusalText(err)+"\n")
		return
	}
	if !done.Status.Terminal() && r.Context().Err() != nil {
		abandonWait(r.Context(), h.Orders, done, p.Name, "the httpexec client went away before the command started")
	}
	if !done.Status.Terminal() {
		// Still queued (its host busy or without a worker) past the
		// wait: the answer is a failure, so the order must not run
		// later. The cancel is on record before the answer, which does
		// not wait for the order to end.
		if _, err := h.Orders.CancelOrder(r.Context(), done, p.Name, "SIGKILL"); err != nil {
			plain(w, apiStatus(err), "text/plain; charset=utf-8", refusalText(err)+"\n")
			return
		}
		plain(w, http.StatusInternalServerError, "text/plain; charset=utf-8",
			"order "+o.ID.String()+" did not finish within "+wait.String()+"; canceled\n")
		return
	}
	h.answer(w, o, done)
}

// revoked says why a request admitted as principal would no longer be,
// under the configuration now loaded: its client's address is outside
// acl.allow, the surface is off, or it acts as another principal; ""
// while it still would be.
func (h *HTTPExec) revoked(r *http.Request, principal string) string {
	hc := h.Config().Compat.HTTPExec
	switch _, ok := clientAddr(h.ACL(), r); {
	case !ok:
		return "client address no longer allowed"
	case !hc.Enabled:
		return "compat.httpexec was turned off"
	case hc.Principal != principal:
		return "compat.httpexec.principal changed"
	}
	return ""
}

// resolveHTTPExec is httpexec's lookup: root is EXEC_ROOT with every
// symlink resolved, the command is root joined with rel, resolved again
// unless followLinks, and it must lie inside root and be a regular file.
// path is what the 404 names: the resolved path, the link's target for an
// escaping link when links are not followed.
func resolveHTTPExec(execRoot string, followLinks bool, rel string) (path string, found bool, err error) {
	root, err := filepath.EvalSymlinks(execRoot)
	if err != nil {
		return "", false, fmt.Errorf("resolve exec_root %s: %w", execRoot, err)
	}
	if root, err = filepath.Abs(root); err != nil {
		return "", false, fmt.Errorf("resolve exec_root %s: %w", execRoot, err)
	}
	path = filepath.Join(root, rel)
	if !followLinks {
		path = realpath(path)
	}
	if path != root && !strings.HasPrefix(path, root+"/") {
		return path, false, nil
	}
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return path, false, nil
	}
	return path, true, nil
}

// realpath is Python's os.path.realpath: symlinks resolved as far as the
// path exists, the rest kept as spelled.
func realpath(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	dir, base := filepath.Split(p)
	dir = filepath.Clean(dir)
	if dir == p || dir == "/" {
		return p
	}
	return filepath.Join(realpath(dir), base)
}

// order builds the order from the body. A body is read only when it is
// declared JSON, as the original did; a non-zero status is the original's
// answer to a body it could not use; maxBody is http.max_body_bytes of
// the configuration the request started with.
func (h *HTTPExec) order(r *http.Request, path string, maxBody int64) (*order.Order, int) {
	o := &order.Order{Kind: order.KindExec, Command: path}
	if !quartIsJSON(r.Header.Get("Content-Type")) {
		return o, 0
	}
	if r.ContentLength > maxBody { // refused unread, before "100 Continue"
		return nil, http.StatusRequestEntityTooLarge
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		// A body cut short (a chunked one that stops, a connection
		// closed): not one Quart could read, not one too large.
		return nil, http.StatusBadRequest
	}
	if int64(len(raw)) > maxBody {
		return nil, http.StatusRequestEntityTooLarge
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, http.StatusBadRequest
	}
	params, err := pyLoads(raw)
	if err != nil {
		return nil, http.StatusBadRequest
	}
	if err := applyHTTPExec(params, o); err != nil {
		return nil, http.StatusUnprocessableEntity // answered 400 (ServeHTTP)
	}
	return o, 0
}

// quartIsJSON is Quart's request.is_json, which decided whether httpexec
// read the body: application/json or any application/*+json.
func quartIsJSON(contentType string) bool {
	mt, _, _ := mime.ParseMediaType(contentType) // lower case; "" when unparsable
	return mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")
}

// applyHTTPExec copies the body into o as httpexec 1.0.3 read it:
// params = request.json or {}; args = params.get("args", []); each stream
// params.get(key, {}), a dict; capture by truthiness; encode looked up only
// for a captured stream or a stdin with content; environ | (env or {}).
// What raised there is errHTTPExecInput (its 500, a 400 here).
func applyHTTPExec(params any, o *order.Order) error {
	if !pyTruthy(params) {
		return nil // request.json or {}: [], 0, "", false and null run bare
	}
	m, ok := params.(map[string]any)
	if !ok {
		return errHTTPExecInput // a truthy list, number or string has no .get
	}
	if args, ok := m["args"]; ok {
		list, ok := args.([]any)
		if !ok {
			return errHTTPExecInput // [path] + args needs a list
		}
		o.Args = []string{}
		for _, a := range list {
			s, ok := a.(string)
			if !ok {
				return errHTTPExecInput // exec takes strings only
			}
			o.Args = append(o.Args, s)
		}
	}
	streams := map[string]map[string]any{}
	for _, key := range []string{"stdin", "stdout", "stderr"} {
		v, ok := m[key]
		if !ok {
			streams[key] = map[string]any{}
			continue
		}
		if streams[key], ok = v.(map[string]any); !ok {
			return errHTTPExecInput // null or a non-dict has no .get
		}
	}
	if content := streams["stdin"]["content"]; content != nil {
		text, ok := content.(string)
		if !ok {
			return errHTTPExecInput
		}
		enc, err := encodingOf(streams["stdin"]["encode"])
		if err != nil {
			return err
		}
		switch enc {
		case order.EncodeBase64:
			o.Stdin, err = pyB64Decode(text)
		default:
			o.Stdin, err = order.Decode(text, enc)
		}
		if err != nil {
			return errHTTPExecInput
		}
	}
	for _, s := range []struct {
		key     string
		capture *bool
		enc     *order.Encoding
	}{{"stdout", &o.CaptureStdout, &o.StdoutEncode}, {"stderr", &o.CaptureStderr, &o.StderrEncode}} {
		if *s.capture = pyTruthy(streams[s.key]["capture"]); !*s.capture {
			continue
		}
		enc, err := encodingOf(streams[s.key]["encode"])
		if err != nil {
			return err
		}
		*s.enc = enc
	}
	if env := m["environment"]; pyTruthy(env) {
		vars, ok := env.(map[string]any)
		if !ok {
			return errHTTPExecInput // environ | env needs a dict
		}
		o.Env = map[string]string{}
		for k, v := range vars {
			s, ok := v.(string)
			if !ok {
				return errHTTPExecInput // exec takes string values only
			}
			o.Env[k] = s
		}
		o.EnvNames = slices.Sorted(maps.Keys(o.Env))
	}
	return nil
}

// encodingOf is a stream's "encode": null, or a scheme httpexec knew.
func encodingOf(v any) (order.Encoding, error) {
	switch v {
	case nil:
		return order.EncodeText, nil
	case "base64", "base85":
		return order.Encoding(v.(string)), nil
	}
	return "", errHTTPExecInput
}

// answer writes the finished order as httpexec's response.
func (h *HTTPExec) answer(w http.ResponseWriter, asked, o *order.Order) {
	rc, ok := returnCode(o.Result)
	if !o.Status.Terminal() || !ok {
		msg := "order " + o.ID.String() + " ended " + string(o.Status)
		if e, status, ok := hostRefusal(o); ok {
			// The host's worker refused what the API allowed (its
			// env_deny, its rules, its users): a refusal, answered with
			// its status (403 for the host's policy) as orderly's other
			// plain-text refusals are, naming the order, which is on
			// record. One the host could not run (unprocessable: a found
			// file without an execute bit, a command_path directory gone)
			// stays httpexec's 500 for a file that could not run.
			if e.Code == order.CodeUnprocessable {
				status = http.StatusInternalServerError
			}
			plain(w, status, "text/plain; charset=utf-8", "refused by the host: "+e.Error()+": order "+o.ID.String()+"\n")
			return
		}
		if o.Result != nil && o.Result.Error != "" {
			msg += ": " + o.Result.Error
		}
		plain(w, http.StatusInternalServerError, "text/plain; charset=utf-8", msg+"\n")
		return
	}
	resp := httpexecResponse{Return: rc}
	if asked.CaptureStdout {
		resp.Stdout = httpexecOutput(o.Result.Stdout.Content, asked.StdoutEncode)
	}
	if asked.CaptureStderr {
		resp.Stderr = httpexecOutput(o.Result.Stderr.Content, asked.StderrEncode)
	}
	writeQuartJSON(w, http.StatusOK, resp)
}

// httpexecOutput encodes a captured stream. Text is sent as it is when it
// is UTF-8 (where httpexec failed with a 500 otherwise, orderly switches
// to base64 and says so in "encode").
func httpexecOutput(b []byte, enc order.Encoding) *httpexecStream {
	s := &httpexecStream{}
	if enc == order.EncodeText && utf8.Valid(b) {
		s.Content = string(b)
		return s
	}
	content, got := order.Encode(b, enc)
	e := string(got)
	s.Content, s.Encode = content, &e
	return s
}

// apiStatus is err's status under the API's one error map.
func apiStatus(err error) int {
	var e *order.Error
	if !errors.As(err, &e) {
		return http.StatusInternalServerError
	}
	return api.HTTPStatus(err)
}

// refusalText is the client-facing message of err.
func refusalText(err error) string {
	var e *order.Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// Refuse writes a refusal httpexec never had as the surface writes
// orderly's own: plain text, the message on one line (api.CompatRefuser,
// for limits.rate_per_ip).
func (h *HTTPExec) Refuse(w http.ResponseWriter, status int, msg string) {
	plain(w, status, "text/plain; charset=utf-8", msg+"\n")
}

// Source is the surface's name on record (api.CompatRefuser).
func (h *HTTPExec) Source() string { return "httpexec" }

// InternalError is Quart's 500 page (api.CompatRefuser).
func (h *HTTPExec) InternalError(w http.ResponseWriter) { quart500(w) }

// quart500 is Quart's page for an exception in the view.
func quart500(w http.ResponseWriter) {
	quartError(w, http.StatusInternalServerError, "Internal Server Error", "The server encountered an internal error and was unable to complete your request. Either the server is overloaded or there is an error in the application.")
}

// plain writes body as the answer, with contentType. An HTML answer
// may quote the request (the 404 names the path as
// httpexec did, unescaped: "/hx/<script>…" put markup on the API's
// origin, which the web UI shares); it goes out with a policy under
// which a browser runs, loads and sends nothing from it, and never reads
// it as another type. The bytes stay httpexec's.
func plain(w http.ResponseWriter, status int, contentType, body string) {
	if strings.HasPrefix(contentType, "text/html") {
		w.Header().Set("Content-Security-Policy", "default-src 'none'; sandbox")
		w.Header().Set("X-Content-Type-Options", "nosniff")
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// quartError is the HTML error page Quart (werkzeug) serves.
func quartError(w http.ResponseWriter, status int, title, text string) {
	plain(w, status, "text/html; charset=utf-8", fmt.Sprintf(
		"<!doctype html>\n<html lang=en>\n<title>%d %s</title>\n<h1>%s</h1>\n<p>%s</p>\n", status, title, title, text))
}
