package compat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"sort"
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

// httpexecBody is the request body. Fields are raw so that the original's
// type rules (null allowed here, an error there) can be applied one by one.
type httpexecBody struct {
	Args        json.RawMessage `json:"args"`
	Stdin       json.RawMessage `json:"stdin"`
	Stdout      json.RawMessage `json:"stdout"`
	Stderr      json.RawMessage `json:"stderr"`
	Environment json.RawMessage `json:"environment"`
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

// errHTTPExecInput is a body the original refused with a 500: httpexec
// raised on it (a null args list, an unknown encoding, a non-string value).
var errHTTPExecInput = errors.New("httpexec: unusable request")

func (h *HTTPExec) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cfg := h.Config()
	hc := cfg.Compat.HTTPExec
	ip, ok := clientAddr(h.ACL(), r)
	if !ok {
		plain(w, http.StatusForbidden, "text/plain; charset=utf-8", "client address not allowed\n")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		quartError(w, http.StatusMethodNotAllowed, "Method Not Allowed", "The method is not allowed for the requested URL.")
		return
	}
	rel := strings.TrimLeft(strings.TrimPrefix(r.URL.Path, strings.TrimSuffix(hc.Prefix, "/")), "/")
	if rel == "" {
		quartError(w, http.StatusNotFound, "Not Found", "The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.")
		return
	}
	path, found, err := resolveHTTPExec(hc.ExecRoot, hc.FollowLinks, rel)
	if err != nil {
		quartError(w, http.StatusInternalServerError, "Internal Server Error", "The server encountered an internal error and was unable to complete your request. Either the server is overloaded or there is an error in the application.")
		return
	}
	if !found {
		plain(w, http.StatusNotFound, "text/html; charset=utf-8", fmt.Sprintf("Command `%s` not found", path))
		return
	}
	o, status := h.order(r, path)
	if status != 0 {
		switch status {
		case http.StatusBadRequest:
			quartError(w, http.StatusBadRequest, "Bad Request", "The browser (or proxy) sent a request that this server could not understand.")
		case http.StatusRequestEntityTooLarge:
			quartError(w, status, "Request Entity Too Large", "The data value transmitted exceeds the capacity limit.")
		default:
			quartError(w, status, "Internal Server Error", "The server encountered an internal error and was unable to complete your request. Either the server is overloaded or there is an error in the application.")
		}
		return
	}
	o.Host, o.Source = hc.Host, "httpexec"
	p := auth.Principal{Name: hc.Principal, Roles: hc.Roles}
	wait := 24 * time.Hour
	if h.Wait != nil {
		wait = h.Wait()
	}
	done, err := h.Orders.SubmitOrder(r.Context(), p, o, wait)
	if err != nil {
		code := apiStatus(err)
		if code >= 400 && code < 500 {
			h.Orders.AuditRefusal(r.Context(), r, p.Name, ip, "httpexec", code, err)
		}
		plain(w, code, "text/plain; charset=utf-8", refusalText(err)+"\n")
		return
	}
	h.answer(w, o, done)
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
// answer to a body it could not use.
func (h *HTTPExec) order(r *http.Request, path string) (*order.Order, int) {
	o := &order.Order{Kind: order.KindExec, Command: path}
	if !quartIsJSON(r.Header.Get("Content-Type")) {
		return o, 0
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, h.Config().HTTP.MaxBodyBytes+1))
	if err != nil || int64(len(raw)) > h.Config().HTTP.MaxBodyBytes {
		return nil, http.StatusRequestEntityTooLarge
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, http.StatusBadRequest
	}
	var body *httpexecBody
	if err := pyUnmarshal(raw, &body); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, http.StatusInternalServerError
		}
		return nil, http.StatusBadRequest
	}
	if body == nil {
		return o, 0
	}
	if err := body.apply(o); err != nil {
		return nil, http.StatusInternalServerError
	}
	return o, 0
}

// quartIsJSON is Quart's request.is_json, which decided whether httpexec
// read the body: application/json or any application/*+json.
func quartIsJSON(contentType string) bool {
	mt, _, _ := mime.ParseMediaType(contentType) // lower case; "" when unparsable
	return mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")
}

// apply copies the body into o with httpexec's rules.
func (b *httpexecBody) apply(o *order.Order) error {
	// httpexec prepended the path to args: a null list failed there.
	if len(b.Args) > 0 {
		if err := json.Unmarshal(b.Args, &o.Args); err != nil || o.Args == nil {
			return errHTTPExecInput
		}
	}
	if present(b.Stdin) {
		var in struct {
			Content *string `json:"content"`
			Encode  *string `json:"encode"`
		}
		if err := json.Unmarshal(b.Stdin, &in); err != nil {
			return errHTTPExecInput
		}
		if in.Content != nil {
			enc, err := encodingOf(in.Encode)
			if err != nil {
				return err
			}
			if o.Stdin, err = order.Decode(*in.Content, enc); err != nil {
				return errHTTPExecInput
			}
		}
	}
	for _, s := range []struct {
		raw     json.RawMessage
		capture *bool
		enc     *order.Encoding
	}{{b.Stdout, &o.CaptureStdout, &o.StdoutEncode}, {b.Stderr, &o.CaptureStderr, &o.StderrEncode}} {
		if !present(s.raw) {
			continue
		}
		var out struct {
			Capture *bool   `json:"capture"`
			Encode  *string `json:"encode"`
		}
		if err := pyUnmarshal(s.raw, &out); err != nil {
			return errHTTPExecInput
		}
		*s.capture = out.Capture != nil && *out.Capture
		enc, err := encodingOf(out.Encode)
		if err != nil {
			return err
		}
		*s.enc = enc
	}
	if present(b.Environment) {
		if err := json.Unmarshal(b.Environment, &o.Env); err != nil {
			return errHTTPExecInput
		}
		for k := range o.Env {
			o.EnvNames = append(o.EnvNames, k)
		}
		sort.Strings(o.EnvNames)
	}
	return nil
}

func present(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }

func encodingOf(s *string) (order.Encoding, error) {
	if s == nil {
		return order.EncodeText, nil
	}
	switch *s {
	case "base64", "base85":
		return order.Encoding(*s), nil
	}
	return "", errHTTPExecInput
}

// answer writes the finished order as httpexec's response.
func (h *HTTPExec) answer(w http.ResponseWriter, asked, o *order.Order) {
	rc, ok := returnCode(o.Result)
	if !o.Status.Terminal() || !ok {
		msg := "order " + o.ID.String() + " ended " + string(o.Status)
		if o.Status == order.StatusRejected && o.Result != nil {
			// httpexec answered 500 when a found file could not run (no
			// execute bit); the host policy's refusal is where orderly
			// finds that out.
			plain(w, http.StatusInternalServerError, "text/plain; charset=utf-8", "refused by the host: "+o.Result.Error+"\n")
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
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(resp)
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

func plain(w http.ResponseWriter, status int, contentType, body string) {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// quartError is the HTML error page Quart (werkzeug) serves.
func quartError(w http.ResponseWriter, status int, title, text string) {
	plain(w, status, "text/html; charset=utf-8", fmt.Sprintf(
		"<!doctype html>\n<html lang=en>\n<title>%d %s</title>\n<h1>%s</h1>\n<p>%s</p>\n", status, title, title, text))
}
