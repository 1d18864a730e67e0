package natsembed

import (
	"context"
	"fmt"
	"log/slog"
)

// slogAdapter routes nats-server's logger to slog. Notices (the startup
// banner, mostly) go to debug so that `orderly serve` is not drowned in them;
// Fatalf only logs, because exiting is the owner's decision, not the
// library's.
type slogAdapter struct {
	l    *slog.Logger
	full *storeFull // told of every error line
}

func (a slogAdapter) log(level slog.Level, format string, v ...any) {
	if !a.l.Enabled(context.Background(), level) {
		return
	}
	a.l.Log(context.Background(), level, fmt.Sprintf(format, v...), "component", "nats-server")
}

func (a slogAdapter) error(format string, v ...any) {
	if a.full != nil {
		a.full.saw(fmt.Sprintf(format, v...))
	}
	a.log(slog.LevelError, format, v...)
}

func (a slogAdapter) Noticef(format string, v ...any) { a.log(slog.LevelDebug, format, v...) }
func (a slogAdapter) Warnf(format string, v ...any)   { a.log(slog.LevelWarn, format, v...) }
func (a slogAdapter) Fatalf(format string, v ...any)  { a.error(format, v...) }
func (a slogAdapter) Errorf(format string, v ...any)  { a.error(format, v...) }
func (a slogAdapter) Debugf(format string, v ...any)  { a.log(slog.LevelDebug, format, v...) }
func (a slogAdapter) Tracef(format string, v ...any)  { a.log(slog.LevelDebug, format, v...) }
