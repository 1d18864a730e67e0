package logging_test

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/logging"
	"github.com/orderly-run/orderly/internal/testenv"
)

// rfc5424 matches a whole message: PRI, version, timestamp, hostname,
// app-name, procid, msgid, structured data, message.
var rfc5424 = regexp.MustCompile(`^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\d+) - (-|\[orderly@32473(?: [^ =\]"]{1,32}="(?:[^"\\\]]|\\["\\\]])*")*\])(?: (.*))?$`)

// syslogd is a unixgram socket standing in for the syslog daemon.
type syslogd struct {
	t    *testing.T
	path string
	conn *net.UnixConn
}

func listen(t *testing.T, path string) *syslogd {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &syslogd{t: t, path: path, conn: conn}
}

// next returns the next datagram, failing after a deadline.
func (d *syslogd) next() string {
	d.t.Helper()
	buf := make([]byte, 64<<10)
	if err := d.conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		d.t.Fatal(err)
	}
	n, err := d.conn.Read(buf)
	if err != nil {
		d.t.Fatalf("no syslog message: %v", err)
	}
	return string(buf[:n])
}

// TestSyslogFromConfig points log.format syslog at a socket through the
// config file and checks the RFC 5424 framing of what arrives.
func TestSyslogFromConfig(t *testing.T) {
	dir := t.TempDir()
	d := listen(t, filepath.Join(dir, "log.sock"))
	file := filepath.Join(dir, "orderly.yaml")
	yaml := "log:\n  format: syslog\n  level: debug\n  syslog_address: " + d.path + "\n  syslog_facility: local3\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(file, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var fallback bytes.Buffer
	l, err := logging.New(logging.Options{Format: cfg.Log.Format, Level: cfg.Log.Level,
		SyslogAddress: cfg.Log.SyslogAddress, SyslogFacility: cfg.Log.SyslogFacility}, &fallback)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	before := time.Now().Add(-time.Second)
	l.With("host", "web-3").WithGroup("req").Info("order accepted", "order_id", "0193abc", "principal", `ev"il] \x`)
	l.Warn("config drift", "error", errors.New("file changed"), "took", 1500*time.Millisecond)
	l.Debug("")
	l.Error("failed", "bad name=x", 1)

	type want struct {
		pri  int
		sd   string
		text string
	}
	for _, w := range []want{
		{19*8 + 6, `[orderly@32473 host="web-3" req.order_id="0193abc" req.principal="ev\"il\] \\x"]`, "order accepted"},
		{19*8 + 4, `[orderly@32473 error="file changed" took="1.5s"]`, "config drift"},
		{19*8 + 7, `-`, ""},
		{19*8 + 3, `[orderly@32473 bad_name_x="1"]`, "failed"},
	} {
		msg := d.next()
		m := rfc5424.FindStringSubmatch(msg)
		if m == nil {
			t.Fatalf("not RFC 5424: %q", msg)
		}
		if pri, _ := strconv.Atoi(m[1]); pri != w.pri {
			t.Errorf("%q: PRI %d, want %d", msg, pri, w.pri)
		}
		ts, err := time.Parse(time.RFC3339Nano, m[2])
		if err != nil || ts.Before(before) || ts.After(time.Now()) {
			t.Errorf("%q: timestamp %s: %v", msg, m[2], err)
		}
		if host, _ := os.Hostname(); m[3] != host && host != "" {
			t.Errorf("%q: hostname %s, want %s", msg, m[3], host)
		}
		if m[4] != "orderly" || m[5] != strconv.Itoa(os.Getpid()) {
			t.Errorf("%q: app-name %s, procid %s", msg, m[4], m[5])
		}
		if m[6] != w.sd || m[7] != w.text {
			t.Errorf("%q:\n SD %s, want %s\n MSG %q, want %q", msg, m[6], w.sd, m[7], w.text)
		}
	}
	if fallback.Len() != 0 {
		t.Errorf("lines went to the fallback: %s", fallback.String())
	}
}

// TestSyslogSurvivesDaemonRestart: when the daemon goes away the line goes
// to the fallback writer; when it is back on the same path, the next line
// reaches it again.
func TestSyslogSurvivesDaemonRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.sock")
	d := listen(t, path)
	var fallback testenv.LogBuffer
	l, err := logging.New(logging.Options{Format: "syslog", Level: "info", SyslogAddress: path}, &fallback)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Info("one")
	if msg := d.next(); !strings.HasPrefix(msg, "<30>1 ") || !strings.HasSuffix(msg, " - one") {
		t.Fatalf("first message %q (want facility daemon, severity info)", msg)
	}

	d.conn.Close()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	l.Info("two")
	if !strings.Contains(fallback.String(), " - two\n") {
		t.Fatalf("line lost while the daemon was down; fallback has %q", fallback.String())
	}

	d = listen(t, path)
	l.Info("three")
	if msg := d.next(); !strings.HasSuffix(msg, " - three") {
		t.Fatalf("after the restart: %q", msg)
	}
}

func TestSyslogRefusesToStartWithoutADaemon(t *testing.T) {
	_, err := logging.New(logging.Options{Format: "syslog", SyslogAddress: filepath.Join(t.TempDir(), "none")}, nil)
	// A newcomer (a Vigrid config imported with log_format: syslog, on a
	// machine without a syslog daemon) must be told what to change.
	if err == nil || !strings.Contains(err.Error(), "log.format syslog") ||
		!strings.Contains(err.Error(), "log.syslog_address") || !strings.Contains(err.Error(), "log.format to text or json") {
		t.Fatalf("New = %v, want an error naming log.format syslog and the settings to change", err)
	}
}

// Named types, as the packages that log them define them (order.Status).
type (
	status  string
	attempt int
	retried bool
	level   struct{ name string }
)

// MarshalText makes level an encoding.TextMarshaler, as JSON sees it.
func (l level) MarshalText() ([]byte, error) { return []byte(l.name), nil }

// TestSyslogNamedTypes: a value of a named type is written as the JSON
// handler writes it, minus quoting: a named string is its plain text (not
// a JSON string inside the SD-PARAM's quotes), a named number or bool is
// the number or bool, and a struct is still its JSON.
func TestSyslogNamedTypes(t *testing.T) {
	d := listen(t, filepath.Join(t.TempDir(), "log.sock"))
	l, err := logging.New(logging.Options{Format: "syslog", Level: "info", SyslogAddress: d.path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Info("order finished", "status", status("succeeded"), "odd", status(`a"b]`), "attempt", attempt(2),
		"retried", retried(true), "level", level{"high"}, "ptr", new(status("x")),
		"obj", struct{ A int }{1})
	want := `[orderly@32473 status="succeeded" odd="a\"b\]" attempt="2" retried="true" level="high" ptr="x" obj="{\"A\":1}"]`
	if msg := d.next(); !strings.Contains(msg, " "+want+" order finished") {
		t.Errorf("got %q\nwant SD %s", msg, want)
	}
}

// TestSyslogEscapesControlCharacters: a value that came from a client (a
// request's path, decoded from %0A) cannot end the line it is logged on,
// neither in the message the daemon receives nor in the fallback's line
// while the daemon is away, and so cannot add a line that reads as
// orderly's own. Control characters are written as the JSON handler
// writes them; a backslash stays distinguishable from them.
func TestSyslogEscapesControlCharacters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.sock")
	d := listen(t, path)
	var fallback testenv.LogBuffer
	l, err := logging.New(logging.Options{Format: "syslog", Level: "info", SyslogAddress: path}, &fallback)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	forged := "/ui/x\n<27>1 2026-12-05T00:00:00Z web-3 orderly 1 - [orderly@32473 principal=\"admin\"] order finished"
	want := `path="/ui/x\n<27>1 2026-12-05T00:00:00Z web-3 orderly 1 - [orderly@32473 principal=\"admin\"\] order finished"`
	l.Warn("ui form refused\r\nsecond", "path", forged, "odd", "a\\nb\tc\x00d\x7fe\u0085f\u2028g")
	msg := d.next()
	if strings.ContainsAny(msg, "\n\r\t\x00\x7f\u0085\u2028") {
		t.Fatalf("a control character reached the daemon raw: %q", msg)
	}
	if !strings.Contains(msg, want) || !strings.Contains(msg, `odd="a\\nb\tc\u0000d\u007fe\u0085f\u2028g"`) ||
		!strings.HasSuffix(msg, `] ui form refused\r\nsecond`) {
		t.Fatalf("message %q\nwant it to hold %s and the escaped message", msg, want)
	}

	d.conn.Close()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	l.Warn("ui form refused", "path", forged)
	if lines := strings.Split(strings.TrimSuffix(fallback.String(), "\n"), "\n"); len(lines) != 1 || !strings.Contains(lines[0], want) {
		t.Fatalf("the fallback has %d lines, want 1 holding %s: %q", len(lines), want, fallback.String())
	}
}
