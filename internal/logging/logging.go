// Package logging builds the process's slog.Logger from the log section of
// the config: text or JSON on stderr, or RFC 5424 to the local syslog
// socket (DESIGN §9).
package logging

import (
	"fmt"
	"io"
	"log/slog"
)

// Options are the log settings (config.Log, without importing it).
type Options struct {
	Format         string // text, json or syslog
	Level          string // a slog level name: debug, info, warn, error, warn+2…
	SyslogAddress  string // syslog socket; "" is /dev/log
	SyslogFacility string // syslog facility name; "" is daemon
}

// Logger is a built logger, its level (changeable on a config reload) and
// what to close on exit.
type Logger struct {
	*slog.Logger
	Level *slog.LevelVar
	close func() error
}

// Close releases the syslog socket, if any.
func (l *Logger) Close() error {
	if l.close == nil {
		return nil
	}
	return l.close()
}

// SetLevel applies a level name, as a reload does; an unknown name keeps
// the current level (config validation refuses it before it gets here).
func (l *Logger) SetLevel(name string) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(name)); err == nil {
		l.Level.Set(lvl)
	}
}

// New builds the logger o asks for, writing to out (stderr) unless the
// format is syslog; then out only receives the lines the socket refused.
func New(o Options, out io.Writer) (*Logger, error) {
	l := &Logger{Level: new(slog.LevelVar)}
	l.SetLevel(o.Level)
	opts := &slog.HandlerOptions{Level: l.Level}
	switch o.Format {
	case "json":
		l.Logger = slog.New(slog.NewJSONHandler(out, opts))
	case "syslog":
		h, err := NewSyslogHandler(SyslogOptions{Address: o.SyslogAddress, Facility: o.SyslogFacility,
			Level: l.Level, Fallback: out})
		if err != nil {
			return nil, fmt.Errorf("log.format syslog: %w: is a syslog daemon (rsyslog, journald) listening there? "+
				"set log.syslog_address to its socket, or log.format to text or json for stderr", err)
		}
		l.Logger, l.close = slog.New(h), h.Close
	case "", "text":
		l.Logger = slog.New(slog.NewTextHandler(out, opts))
	default:
		return nil, fmt.Errorf("log.format %q must be text, json or syslog", o.Format)
	}
	return l, nil
}
