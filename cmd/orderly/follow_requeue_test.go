package main

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/api/client"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestFollowOfAnOrderThatRunsAgain: a follow of an idempotent order
// whose worker is SIGKILLed mid-run sees it run again on the successor,
// under the same id, its output from offset 0 again. The follow placed
// the new run's chunks against the count of the first run's bytes, took
// them for repeats and wrote "run 1\n" alone: the output of the run that
// counted never showed. It is told the order runs again (OnRunAgain),
// and writes the new run's output from its start after the first's.
func TestFollowOfAnOrderThatRunsAgain(t *testing.T) {
	s := newStack(t)
	dir := t.TempDir()
	count, pidFile := filepath.Join(dir, "count"), filepath.Join(dir, "pid")
	cmd := startVictimWorker(t, s, "victim")
	o := s.submit(map[string]any{"host": "victim", "command": "sh", "timeout_seconds": 120, "idempotent": true,
		"args": []string{"-c", `echo $$ > "$1"; echo x >> "$2"; n=$(wc -l < "$2"); echo "run $n"; if [ "$n" -lt 2 ]; then sleep 60 & wait; fi`, "_", pidFile, count}},
		"", http.StatusAccepted)
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
	})
	c, err := client.New(s.url, s.token)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var out bytes.Buffer
	wrote := make(chan struct{}, 16)
	ranAgain := 0
	type result struct {
		o   *client.Order
		err error
	}
	res := make(chan result, 1)
	go func() {
		fin, err := c.Follow(testenv.Context(t), o.ID.String(), client.FollowOptions{
			Stdout: writerFunc(func(p []byte) (int, error) {
				mu.Lock()
				defer mu.Unlock()
				out.Write(p)
				select {
				case wrote <- struct{}{}:
				default:
				}
				return len(p), nil
			}),
			OnRunAgain: func() { mu.Lock(); ranAgain++; mu.Unlock() }})
		res <- result{fin, err}
	}()
	select {
	case <-wrote:
	case r := <-res:
		t.Fatalf("the follow ended before the first run's output: %+v %v", r.o, r.err)
	case <-time.After(60 * time.Second):
		t.Fatal("the first run's output was not followed in 60 s")
	}
	// Its process is on record, so the successor finds and reaps it.
	s.waitFor(o.ID, 30*time.Second, func(o api.Order) bool {
		var recorded bool
		err := s.b.pool.QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM order_processes WHERE order_id = $1)`, o.ID).Scan(&recorded)
		return err == nil && recorded
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	s.startWorker("victim")
	r := <-res
	if r.err != nil || r.o.Status != client.StatusSucceeded || r.o.Attempt != 2 {
		t.Fatalf("Follow: %+v, %v; want the order succeeded on its second attempt", r.o, r.err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got, want := out.String(), "run 1\nrun 2\n"; got != want {
		t.Errorf("followed %q, want %q (the first run's output, then the second's)", got, want)
	}
	if ranAgain != 1 {
		t.Errorf("OnRunAgain told %d times, want once", ranAgain)
	}
}

// writerFunc is an io.Writer of a function.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
