package compat

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/runbook"
)

// execute is POST /api/runbooks/<f>/execute: the run as stage0's
// Server-Sent Events, one event per output line, then "done". 404 and 403
// (claims) are JSON before any stream; recursion, validation and input
// failures are reported inside a 200 stream, as stage0 did.
func (s *Stage0) execute(q *stage0Request, file string) {
	rb, _, ok := s.load(q, file, stage0Fail)
	if !ok {
		return
	}
	body, err := readBody(q.r, q.cfg.HTTP.MaxBodyBytes)
	if err != nil {
		stage0Fail(q.w, http.StatusBadRequest, err.Error())
		return
	}
	env, envErr := runbook.Sanitize(body.EnvVars)
	if envErr != nil {
		env = nil
		envErr = fmt.Errorf("ERROR: %w", envErr)
	}
	sc := q.cfg.Compat.Stage0
	scheme := "http"
	if q.r.TLS != nil {
		scheme = "https"
	}
	ctx := q.r.Context()
	o, err := s.Runbooks.RunRunbook(ctx, q.p, api.RunbookRun{File: rb.File, Env: env, Hosts: sc.Hosts, Chain: q.chain,
		BaseURL: scheme + "://" + q.r.Host, Path: strings.TrimSuffix(sc.Prefix, "/") + "/runbooks", Source: "stage0",
		EnvError: envErr, ServiceEnv: s.getenv})
	if err != nil {
		switch reasonOf(err) {
		case "runbook_claims":
			stage0Fail(q.w, http.StatusForbidden, asOrderError(err).Message)
		case "runbook_recursion", "runbook_depth", "runbook_invalid", "runbook_inputs", "runbook_host_busy", "runbook_env":
			st := s.startStream(q.w)
			msgs := messagesOf(err)
			for _, m := range msgs {
				st.event("stderr", m+"\n")
			}
			st.done(rb.File, 1, "", strings.Join(msgs, "\n")+"\n", msgs, rb.Warnings)
		default:
			code, msg := statusFor(err)
			stage0Fail(q.w, code, msg)
		}
		return
	}

	st := s.startStream(q.w)
	limit := q.cfg.Worker.MaxOutputBytes
	lines := map[string]*lineSplitter{"stdout": {limit: limit}, "stderr": {limit: limit}}
	final, err := s.Runbooks.FollowOrder(ctx, o, func(stream string, p []byte) {
		if ls := lines[stream]; ls != nil {
			ls.write(p, func(line string) { st.event(stream, line) })
		}
	})
	if err != nil {
		return // the client went away; the order runs on
	}
	for _, name := range []string{"stdout", "stderr"} {
		if cutByWorker(final, name) {
			// The live stream stopped at the worker's cap, mid-line: the
			// tail is not a line the script printed.
			lines[name].drop()
			continue
		}
		lines[name].flush(func(line string) { st.event(name, line) })
	}
	rc, stdout, stderr := runOutcome(final)
	out, errOut := lines["stdout"].kept.String(), lines["stderr"].kept.String()
	if out == "" && lines["stdout"].seen == 0 {
		out = stdout // no live output reached us: the stored output
	}
	if errOut == "" && lines["stderr"].seen == 0 {
		errOut = stderr
	} else if note := strings.TrimPrefix(stderr, storedStderr(final)); note != "" {
		// The timeout or refusal note is not in the live output.
		st.event("stderr", note+"\n")
		errOut += note
	}
	if final.Result != nil && (final.Result.Stdout.Truncated || final.Result.Stderr.Truncated ||
		lines["stdout"].dropped || lines["stderr"].dropped) {
		errOut += fmt.Sprintf("\n[WARNING: Output truncated due to size limit (%d bytes)]", limit)
	}
	st.done(rb.File, rc, out, errOut, []string{}, rb.Warnings)
}

func storedStderr(o *order.Order) string {
	if o.Result == nil {
		return ""
	}
	return string(o.Result.Stderr.Content)
}

// messagesOf returns the messages of a refusal: every problem of an
// invalid runbook, else the one message.
func messagesOf(err error) []string {
	if e := asOrderError(err); e != nil {
		if ps, ok := e.Details["problems"].([]runbook.Problem); ok {
			return runbook.Messages(ps)
		}
		return []string{e.Message}
	}
	return []string{err.Error()}
}

// lineSplitter turns output chunks into lines, keeping each line's
// newline, and drops whole lines past limit bytes, as stage0 did.
type lineSplitter struct {
	limit   int64
	partial []byte
	kept    strings.Builder
	seen    int64
	dropped bool
}

func (l *lineSplitter) write(p []byte, emit func(string)) {
	l.seen += int64(len(p))
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			return
		}
		l.line(string(l.partial[:i+1]), emit)
		l.partial = l.partial[i+1:]
	}
}

func (l *lineSplitter) flush(emit func(string)) {
	if len(l.partial) > 0 {
		l.line(string(l.partial), emit)
		l.partial = nil
	}
}

// drop ends the stream without its unfinished last line.
func (l *lineSplitter) drop() {
	if len(l.partial) > 0 {
		l.dropped = true
		l.partial = nil
	}
}

func (l *lineSplitter) line(s string, emit func(string)) {
	if int64(l.kept.Len()+len(s)) > l.limit {
		l.dropped = true
		return
	}
	l.kept.WriteString(s)
	emit(pyDecode(s))
}

// cutByWorker reports whether the worker capped the order's stream name.
func cutByWorker(o *order.Order, name string) bool {
	if o.Result == nil {
		return false
	}
	if name == "stdout" {
		return o.Result.Stdout.Truncated
	}
	return o.Result.Stderr.Truncated
}

// stage0Stream writes stage0's event stream.
type stage0Stream struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (s *Stage0) startStream(w http.ResponseWriter) *stage0Stream {
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	return &stage0Stream{w: w, rc: rc}
}

// event writes one event: each line of data as its own "data: " line
// (CR and CRLF read as LF first), so data ending in a newline ends with
// an empty "data: " line.
func (st *stage0Stream) event(name, data string) {
	data = strings.ReplaceAll(strings.ReplaceAll(data, "\r\n", "\n"), "\r", "\n")
	var b strings.Builder
	b.WriteString("event: " + name + "\n")
	for _, line := range strings.Split(data, "\n") {
		b.WriteString("data: " + line + "\n")
	}
	b.WriteString("\n")
	if _, err := st.w.Write([]byte(b.String())); err == nil {
		_ = st.rc.Flush()
	}
}

// done writes the last event, its JSON spaced and escaped as Python's
// json.dumps writes it.
func (st *stage0Stream) done(file string, rc int, stdout, stderr string, errs, warnings []string) {
	st.event("done", "{"+strings.Join([]string{
		`"success": ` + strconv.FormatBool(rc == 0),
		`"runbook": ` + pyString(file),
		`"return_code": ` + strconv.Itoa(rc),
		`"stdout": ` + pyString(stdout),
		`"stderr": ` + pyString(stderr),
		`"errors": ` + pyList(errs),
		`"warnings": ` + pyList(warnings),
	}, ", ")+"}")
}

// pyString is s as json.dumps writes a str: ASCII only, non-ASCII as
// \uXXXX (surrogate pairs beyond the BMP), short escapes for \n \r \t \b \f.
func pyString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range pyDecode(s) {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r < 0x20 || (r > 0x7e && r < 0x10000):
			fmt.Fprintf(&b, `\u%04x`, r)
		case r >= 0x10000:
			r -= 0x10000
			fmt.Fprintf(&b, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func pyList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = pyString(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
