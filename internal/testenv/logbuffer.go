package testenv

import (
	"bytes"
	"sync"
)

// LogBuffer is a log sink that a test reads while other goroutines (a
// server, a worker, a child process's output copier) write to it; a
// bytes.Buffer alone would race.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
