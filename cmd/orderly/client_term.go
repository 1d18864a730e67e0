package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// isTerminal reports whether w is a character device (a terminal), so
// progress decorations never end up in files, pipes or test buffers.
func (a *app) isTerminal(w io.Writer) bool {
	if a.getenv("TERM") == "dumb" {
		return false
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// spinner redraws one status line on a terminal until stopped. Its
// goroutine is owned by whoever called startSpinner, which must call stop.
type spinner struct {
	w     io.Writer
	start time.Time
	mu    sync.Mutex
	msg   string
	quit  chan struct{}
	done  chan struct{}
	once  sync.Once
}

func startSpinner(w io.Writer, msg string) *spinner {
	s := &spinner{w: w, start: time.Now(), msg: msg, quit: make(chan struct{}), done: make(chan struct{})}
	go s.loop()
	return s
}

func (s *spinner) loop() {
	defer close(s.done)
	frames := []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}
	t := time.NewTicker(120 * time.Millisecond)
	defer t.Stop()
	for i := 0; ; i++ {
		s.mu.Lock()
		fmt.Fprintf(s.w, "\r\x1b[K%s %s (%s)", frames[i%len(frames)], s.msg, time.Since(s.start).Truncate(100*time.Millisecond))
		s.mu.Unlock()
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
	}
}

// set changes the message.
func (s *spinner) set(msg string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.msg = msg
	s.mu.Unlock()
}

// stop ends the spinner and erases its line; it may be called repeatedly.
func (s *spinner) stop() {
	if s == nil {
		return
	}
	s.once.Do(func() {
		close(s.quit)
		<-s.done
		fmt.Fprint(s.w, "\r\x1b[K")
	})
}
