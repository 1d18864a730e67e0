package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// copyWatchWindow is the length of each CPU profile copyWatch takes, and
// copyWatchAfter how many it takes once the COPY has ended: the burn seen
// after a history load (thirty-fourth and thirty-fifth rounds) lasted
// 40 – 100 s from the level's first round.
const (
	copyWatchWindow = 20 * time.Second
	copyWatchAfter  = 4
)

// copyWatch profiles serve back to back from the start of a history load
// until copyWatchAfter windows after it ended (ended closed), for -profile:
// serve was seen burning ~0.3 of a core for 40 – 100 s after the COPY at
// one level of a quiet run, and at the next run at another, and a profile
// of a serve with nothing else under the same COPY did not show it. Each
// window's file (copy-<size>-<k>.cpu.pb.gz) and serve's own CPU over it
// (its process, the workers apart) go into the level's report line, so
// the run that shows the burn also names it. wait returns that line once
// the last window is saved; the profiler is free again then.
type copyWatch struct {
	done chan struct{}
	mu   sync.Mutex
	rows []string
	err  error
}

func watchCopy(ctx context.Context, srv *server, pprofURL, dir string, size int, ended <-chan struct{}) *copyWatch {
	w := &copyWatch{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		after := 0
		for k := 1; after < copyWatchAfter && ctx.Err() == nil; k++ {
			select {
			case <-ended:
				after++
			default:
			}
			name := fmt.Sprintf("copy-%d-%d.cpu.pb.gz", size, k)
			a, t := srv.cpu(), time.Now()
			err := saveProfile(ctx, pprofURL, filepath.Join(dir, name), copyWatchWindow)
			b := srv.cpu()
			w.mu.Lock()
			if err != nil {
				w.err = err
				w.mu.Unlock()
				return
			}
			phase := "COPY"
			if after > 0 {
				phase = "level"
			}
			w.rows = append(w.rows, fmt.Sprintf("%s %s %.0f %%", name, phase,
				100*(b.serveSelf-a.serveSelf).Seconds()/time.Since(t).Seconds()))
			w.mu.Unlock()
		}
	}()
	return w
}

// wait waits for the last window and returns the report's line.
func (w *copyWatch) wait() string {
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	s := "serve's own CPU (share of a core) in each profile window, during the COPY and the level's first loads: " + strings.Join(w.rows, ", ")
	if w.err != nil {
		s += fmt.Sprintf(" (then: %v)", w.err)
	}
	return s
}

// saveProfile saves a CPU profile of serve over d to file.
func saveProfile(ctx context.Context, pprofURL, file string, d time.Duration) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", pprofURL, int(d.Seconds())), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return fmt.Errorf("CPU profile: %s: %s", resp.Status, b)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
