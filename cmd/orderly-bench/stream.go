package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"time"
)

func streamThroughput(ctx context.Context, c *client, o options, rep *report) error {
	n := o.streamBytes
	size := strconv.FormatInt(n, 10)
	mibN := float64(n) / (1 << 20)
	progress(fmt.Sprintf("stdout: local baselines for %.0f MiB", mibN))
	devnull, err := timeCmd("sh", "-c", "head -c "+size+" /dev/zero > /dev/null")
	if err != nil {
		return err
	}
	viaCat, err := timeCmd("sh", "-c", "head -c "+size+" /dev/zero | cat > /dev/null")
	if err != nil {
		return err
	}
	pipeHash, err := pipeAndHash(n)
	if err != nil {
		return err
	}

	progress(fmt.Sprintf("stdout: order `head -c %s /dev/zero` with ?wait=120", size))
	t := time.Now()
	code, b, headers, err := c.doTimed(ctx, http.MethodPost, "/v1/orders?wait=120", orderBody(o.backlogHost, "head", "-c", size, "/dev/zero"))
	wall := time.Since(t)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("stdout order: %d %.300s", code, b)
	}
	var or orderResp
	if err := json.Unmarshal(b, &or); err != nil {
		return fmt.Errorf("decode stdout order: %w", err)
	}
	if or.Status != "succeeded" || or.Result == nil || or.Result.Stdout.Bytes != n {
		return fmt.Errorf("stdout order %s ended %s with %+v", or.ID, or.Status, or.Result)
	}
	execDur := time.Duration(or.Result.DurationMS) * time.Millisecond
	var span time.Duration
	if or.StartedAt != nil && or.FinishedAt != nil {
		span = or.FinishedAt.Sub(*or.StartedAt)
	}
	rate := func(d time.Duration) string {
		if d <= 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.0f MiB/s", mibN/d.Seconds())
	}
	rep.row(fmt.Sprintf("%.0f MiB stdout through an order (duration_ms)", mibN), fmt.Sprintf("%s (%d ms)", rate(execDur), or.Result.DurationMS),
		"vs local pipe: "+rate(viaCat), nil)
	rep.row(fmt.Sprintf("%.0f MiB stdout, wall time of POST ?wait=120", mibN), fmt.Sprintf("%s (%.2fs)", rate(wall), wall.Seconds()), "", nil)
	rep.detail("local: head > /dev/null", fmt.Sprintf("%s (%.0f ms)", rate(devnull), ms64(devnull)), "sh -c; no copy at all, an upper bound")
	rep.detail("local: head \\| cat > /dev/null", fmt.Sprintf("%s (%.0f ms)", rate(viaCat), ms64(viaCat)), "one pipe, one reader")
	rep.detail("local: head → pipe → Go reader + SHA-256", fmt.Sprintf("%s (%.0f ms)", rate(pipeHash), ms64(pipeHash)), "what the worker's capture does, in the bench process")
	rep.detail("stdout order: started_at → finished_at", fmt.Sprintf("%s (%.0f ms)", rate(span), ms64(span)), "adds storing the 10 MiB kept output in PostgreSQL")
	if or.FinishedAt != nil {
		rep.detail("stdout order: finished_at → response headers → last byte", fmt.Sprintf("%.0f ms → %.0f ms", ms64(t.Add(headers).Sub(*or.FinishedAt)), ms64(t.Add(wall).Sub(*or.FinishedAt))),
			"Complete commit, finished event, GetOrder of the 10 MiB, JSON encoding (whole body buffered before the headers), transfer")
	}
	rep.detail("stdout order: response body", fmt.Sprintf("%.1f MiB of JSON (truncated: %v)", float64(len(b))/(1<<20), or.Result.Stdout.Truncated),
		"10 MiB kept (head + tail); sent as base64 (text with NUL bytes switches to base64)")
	progress(fmt.Sprintf("stdout: order %s exec, %s wall; local pipe %s", rate(execDur), rate(wall), rate(viaCat)))
	return nil
}

func timeCmd(name string, args ...string) (time.Duration, error) {
	t := time.Now()
	if err := exec.Command(name, args...).Run(); err != nil {
		return 0, fmt.Errorf("%s %v: %w", name, args, err)
	}
	return time.Since(t), nil
}

func pipeAndHash(n int64) (time.Duration, error) {
	t := time.Now()
	cmd := exec.Command("head", "-c", strconv.FormatInt(n, 10), "/dev/zero")
	h := sha256.New()
	var count int64
	cmd.Stdout = writerFunc(func(p []byte) (int, error) {
		h.Write(p)
		count += int64(len(p))
		return len(p), nil
	})
	if err := cmd.Run(); err != nil {
		return 0, err
	}
	if count != n {
		return 0, fmt.Errorf("read %d bytes, want %d", count, n)
	}
	return time.Since(t), nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
