package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"time"
)

// loadHistory bulk-loads n finished orders (succeeded runs of `true`, spread
// over the bench's hosts, one a second back from an hour ago, with their
// submitted/started/finished events) with COPY through psql, then ANALYZEs:
// the history a long-running installation has, so the per-order path can be
// measured against it.
func loadHistory(ctx context.Context, srv *server, n int, hosts []string) error {
	cmd := exec.CommandContext(ctx, "psql", "-qX", "-v", "ON_ERROR_STOP=1", srv.dsn)
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out := &limitedBuffer{max: 4096}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start psql: %w", err)
	}
	w := bufio.NewWriterSize(in, 1<<20)
	end := time.Now().Add(-time.Hour)
	ids := make([][16]byte, n)
	at := func(i int) time.Time { return end.Add(-time.Duration(n-i) * time.Second) }
	const ts = "2006-01-02 15:04:05.000000Z07:00"
	fmt.Fprintln(w, `COPY orders (id, host, status, command, timeout_ms, principal, submitted_at, started_at, finished_at,
attempt, worker, exit_code, duration_ms, stdout_bytes, stdout_truncated, stderr_bytes, stderr_truncated) FROM STDIN;`)
	for i := range n {
		ids[i] = uuidV7(at(i))
		t := at(i)
		fmt.Fprintf(w, "%s\t%s\tsucceeded\ttrue\t60000\tbench-history\t%s\t%s\t%s\t1\t%[1]s-w\t0\t1\t0\tf\t0\tf\n",
			uuidText(ids[i]), hosts[i%len(hosts)], t.Format(ts), t.Add(2*time.Millisecond).Format(ts), t.Add(3*time.Millisecond).Format(ts))
	}
	fmt.Fprintln(w, `\.`)
	fmt.Fprintln(w, `COPY order_events (order_id, at, type, status, actor) FROM STDIN;`)
	for i := range n {
		id, t := uuidText(ids[i]), at(i)
		fmt.Fprintf(w, "%s\t%s\tsubmitted\tqueued\tbench-history\n", id, t.Format(ts))
		fmt.Fprintf(w, "%s\t%s\tstarted\trunning\tbench-history\n", id, t.Add(2*time.Millisecond).Format(ts))
		fmt.Fprintf(w, "%s\t%s\tfinished\tsucceeded\tbench-history\n", id, t.Add(3*time.Millisecond).Format(ts))
	}
	fmt.Fprintln(w, `\.`)
	fmt.Fprintln(w, `ANALYZE orders; ANALYZE order_events;`)
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write to psql: %w (%s)", err, out)
	}
	in.Close()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("psql COPY of %d orders: %w: %s", n, err, out)
	}
	return nil
}

// uuidV7 is a UUIDv7 for t (ids are time-ordered, as orderly's are).
func uuidV7(t time.Time) [16]byte {
	var u [16]byte
	binary.BigEndian.PutUint64(u[8:], rand.Uint64())
	binary.BigEndian.PutUint64(u[:8], uint64(t.UnixMilli())<<16|uint64(rand.Uint32()&0x0fff))
	u[6] = u[6]&0x0f | 0x70
	u[8] = u[8]&0x3f | 0x80
	return u
}

func uuidText(u [16]byte) string {
	h := hex.EncodeToString(u[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	max int
	b   []byte
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }
