package logging

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// SDID is the RFC 5424 structured-data id that carries a line's attributes:
// orderly's name at 32473, the enterprise number RFC 5612 reserves for
// documentation, since orderly has no number of its own.
const SDID = "orderly@32473"

// Facility returns the RFC 5424 code of a facility name (daemon, user,
// auth, authpriv, local0 … local7 and the other classic names).
func Facility(name string) (int, bool) {
	switch name {
	case "kern":
		return 0, true
	case "user":
		return 1, true
	case "mail":
		return 2, true
	case "daemon":
		return 3, true
	case "auth":
		return 4, true
	case "syslog":
		return 5, true
	case "lpr":
		return 6, true
	case "news":
		return 7, true
	case "uucp":
		return 8, true
	case "cron":
		return 9, true
	case "authpriv":
		return 10, true
	case "ftp":
		return 11, true
	}
	if len(name) == 6 && strings.HasPrefix(name, "local") && name[5] >= '0' && name[5] <= '7' {
		return 16 + int(name[5]-'0'), true
	}
	return 0, false
}

// SyslogHandler is a slog.Handler that sends each record as one RFC 5424
// message to a local syslog datagram socket (/dev/log): the message is
// the MSG part, the attributes are SD-PARAMs of one SD-ELEMENT named SDID.
// A line the socket does not take (the daemon is restarting, the line is
// too long) is written to the fallback writer instead of being lost.
type SyslogHandler struct {
	conn     *syslogConn
	level    slog.Leveler
	facility int
	host     string
	app      string
	pid      string
	prefix   string   // group names joined with "." and a trailing "."
	params   []string // preformatted ` name="value"` from WithAttrs
}

// syslogConn is the socket, shared by every handler derived from one
// NewSyslogHandler and redialed when a write fails.
type syslogConn struct {
	addr     string
	fallback io.Writer

	mu   sync.Mutex
	conn net.Conn
}

// SyslogOptions configure a SyslogHandler.
type SyslogOptions struct {
	Address  string       // datagram socket path; "" is /dev/log
	Facility string       // facility name; "" is daemon
	AppName  string       // APP-NAME; "" is orderly
	Level    slog.Leveler // minimum level; nil is info
	Fallback io.Writer    // where a line goes that the socket refused; nil drops it
}

// NewSyslogHandler connects to the socket now, so that a missing syslog
// daemon is an error at startup rather than silence later.
func NewSyslogHandler(o SyslogOptions) (*SyslogHandler, error) {
	if o.Address == "" {
		o.Address = "/dev/log"
	}
	if o.Facility == "" {
		o.Facility = "daemon"
	}
	if o.AppName == "" {
		o.AppName = "orderly"
	}
	if o.Level == nil {
		o.Level = slog.LevelInfo
	}
	if o.Fallback == nil {
		o.Fallback = io.Discard
	}
	f, ok := Facility(o.Facility)
	if !ok {
		return nil, fmt.Errorf("syslog facility %q is not known (use daemon, user, auth, local0 … local7)", o.Facility)
	}
	c := &syslogConn{addr: o.Address, fallback: o.Fallback}
	if err := c.dial(); err != nil {
		return nil, err
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "-"
	}
	return &SyslogHandler{conn: c, level: o.Level, facility: f, host: headerField(host, 255),
		app: headerField(o.AppName, 48), pid: strconv.Itoa(os.Getpid())}, nil
}

// Close closes the socket.
func (h *SyslogHandler) Close() error {
	h.conn.mu.Lock()
	defer h.conn.mu.Unlock()
	if h.conn.conn == nil {
		return nil
	}
	err := h.conn.conn.Close()
	h.conn.conn = nil
	return err
}

// Enabled reports whether level is at or above the handler's level.
func (h *SyslogHandler) Enabled(_ context.Context, level slog.Level) bool {
	return level >= h.level.Level()
}

// WithAttrs returns a handler that adds attrs to every line.
func (h *SyslogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h2 := *h
	h2.params = append([]string(nil), h.params...)
	for _, a := range attrs {
		h2.params = appendParam(h2.params, h.prefix, a)
	}
	return &h2
}

// WithGroup returns a handler that qualifies later attribute names.
func (h *SyslogHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.prefix = h.prefix + name + "."
	return &h2
}

// Handle formats r as one RFC 5424 message and sends it.
func (h *SyslogHandler) Handle(_ context.Context, r slog.Record) error {
	params := append([]string(nil), h.params...)
	r.Attrs(func(a slog.Attr) bool {
		params = appendParam(params, h.prefix, a)
		return true
	})
	t := r.Time
	if t.IsZero() {
		t = time.Now()
	}
	var b strings.Builder
	// <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID
	fmt.Fprintf(&b, "<%d>1 %s %s %s %s - ", h.facility*8+severity(r.Level),
		t.Format("2006-01-02T15:04:05.000000Z07:00"), h.host, h.app, h.pid)
	if len(params) == 0 {
		b.WriteString("-")
	} else {
		b.WriteString("[" + SDID)
		for _, p := range params {
			b.WriteString(p)
		}
		b.WriteString("]")
	}
	if r.Message != "" {
		b.WriteString(" " + escapeControls(strings.ToValidUTF8(r.Message, "\uFFFD")))
	}
	return h.conn.send([]byte(b.String()))
}

// severity maps slog levels to RFC 5424 severities.
func severity(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3 // error
	case l >= slog.LevelWarn:
		return 4 // warning
	case l > slog.LevelInfo:
		return 5 // notice
	case l == slog.LevelInfo:
		return 6 // informational
	}
	return 7 // debug
}

// appendParam adds attribute a as SD-PARAMs, flattening groups into
// dotted names, as the JSON and text handlers do.
func appendParam(params []string, prefix string, a slog.Attr) []string {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return params
	}
	if a.Value.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range a.Value.Group() {
			params = appendParam(params, p, g)
		}
		return params
	}
	return append(params, " "+paramName(prefix+a.Key)+`="`+paramValue(valueString(a.Value))+`"`)
}

// valueString renders a value as the JSON handler would, minus quoting.
func valueString(v slog.Value) string {
	switch v.Kind() {
	case slog.KindTime:
		return v.Time().Format(time.RFC3339Nano)
	case slog.KindAny:
		x := v.Any()
		if err, ok := x.(error); ok {
			return err.Error()
		}
		if s, ok := x.(fmt.Stringer); ok {
			return s.String()
		}
		if j, err := json.Marshal(x); err == nil {
			// What JSON writes as a string (a named string type such as
			// order.Status, an encoding.TextMarshaler) is that string:
			// the SD-PARAM's own quotes are enough.
			var s string
			if j[0] == '"' && json.Unmarshal(j, &s) == nil {
				return s
			}
			return string(j)
		}
	}
	return v.String()
}

// paramName makes an SD-NAME: 1 to 32 printable US-ASCII characters other
// than '=', ' ', ']' and '"'.
func paramName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c <= ' ' || c >= 0x7f || c == '=' || c == ']' || c == '"' {
			b[i] = '_'
		}
	}
	if len(b) > 32 {
		b = b[:32]
	}
	if len(b) == 0 {
		return "_"
	}
	return string(b)
}

// paramValue escapes '"', '\' and ']' as RFC 5424 §6.3.3 requires, keeps
// the value valid UTF-8, and writes control characters as escapes
// (escapeControls): after the backslash is doubled, "\n" in the value is
// a newline and "\\n" a backslash and an n.
func paramValue(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return escapeControls(strings.NewReplacer(`\`, `\\`, `"`, `\"`, `]`, `\]`).Replace(s))
}

// escapeControls writes the control characters of s (C0, DEL, C1 and the
// Unicode line and paragraph separators) as escapes, \n, \r, \t or
// \u00XX, as the JSON handler does. A value comes from a client often
// enough (a path, a principal, an error that quotes the request): raw,
// its newline would end the line where the message is read line by line
// — the fallback writer (stderr), a daemon that writes what it receives
// to a file — and what follows it would read as a line of orderly's own
// (RFC 5424 §8.2: control characters are legal but should be avoided).
func escapeControls(s string) string {
	i := strings.IndexFunc(s, isControl)
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for _, r := range s[i:] {
		switch {
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case isControl(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func isControl(r rune) bool {
	return r < 0x20 || (r >= 0x7f && r <= 0x9f) || r == 0x2028 || r == 0x2029
}

// headerField makes a header field: printable US-ASCII, at most max long.
func headerField(s string, max int) string {
	b := []byte(s)
	for i, c := range b {
		if c <= ' ' || c >= 0x7f {
			b[i] = '_'
		}
	}
	if len(b) > max {
		b = b[:max]
	}
	return string(b)
}

func (c *syslogConn) dial() error {
	conn, err := net.Dial("unixgram", c.addr)
	if err != nil {
		return fmt.Errorf("connect to the syslog socket %s: %w", c.addr, err)
	}
	c.conn = conn
	return nil
}

// send writes one message; when the write fails (the daemon restarted and
// the socket is new) it redials once, and failing that writes the line to
// the fallback writer.
func (c *syslogConn) send(msg []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var err error
	for range 2 {
		if c.conn == nil {
			if err = c.dial(); err != nil {
				continue
			}
		}
		if _, err = c.conn.Write(msg); err == nil {
			return nil
		}
		c.conn.Close()
		c.conn = nil
	}
	_, _ = c.fallback.Write(append(msg, '\n'))
	return fmt.Errorf("syslog %s: %w", c.addr, err)
}
