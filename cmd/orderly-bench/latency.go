package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

func latency(ctx context.Context, c *client, srv *server, o options, rep *report) error {
	cpu0 := srv.cpu()
	progress(fmt.Sprintf("latency: %d sequential POST ?wait=10 of `true`", o.latency))
	body := orderBody(o.backlogHost, "true")
	var total, queue, runS, outside []time.Duration
	for i := 0; i < o.latency; i++ {
		t := time.Now()
		code, or, err := c.submit(ctx, body, "?wait=10")
		d := time.Since(t)
		if err != nil {
			return fmt.Errorf("latency: %w", err)
		}
		if code != http.StatusOK || or.Status != "succeeded" || or.StartedAt == nil || or.FinishedAt == nil {
			return fmt.Errorf("latency: order %s answered %d with status %s", or.ID, code, or.Status)
		}
		total = append(total, d)
		queue = append(queue, or.StartedAt.Sub(or.SubmittedAt))
		runS = append(runS, or.FinishedAt.Sub(*or.StartedAt))
		outside = append(outside, d-or.FinishedAt.Sub(or.SubmittedAt))
	}
	cpu1 := srv.cpu()
	// Floors: an HTTP round trip to the API, and one that reads an order
	// from PostgreSQL, on the same keep-alive connection.
	var lastID string
	var healthz, get []time.Duration
	if n := len(total); n > 0 {
		_, or, err := c.submit(ctx, body, "?wait=10")
		if err != nil {
			return err
		}
		lastID = or.ID
	}
	for i := 0; i < 200; i++ {
		t := time.Now()
		if code, _, err := c.do(ctx, http.MethodGet, "/healthz", nil); err != nil || code != http.StatusOK {
			return fmt.Errorf("GET /healthz: %d %v", code, err)
		}
		healthz = append(healthz, time.Since(t))
		t = time.Now()
		if code, _, err := c.do(ctx, http.MethodGet, "/v1/orders/"+lastID, nil); err != nil || code != http.StatusOK {
			return fmt.Errorf("GET order: %d %v", code, err)
		}
		get = append(get, time.Since(t))
	}
	p50, p90, p99, mx := pct(total, 0.50), pct(total, 0.90), pct(total, 0.99), pct(total, 1)
	rep.row("idle submit-to-result latency p50 (POST ?wait=10, sequential)", ms(p50), "≤ 2 ms", ptr(p50 <= 2*time.Millisecond))
	rep.row("idle submit-to-result latency p99", ms(p99), "≤ 10 ms", ptr(p99 <= 10*time.Millisecond))
	rep.detail("idle latency p50 / p90 / p99 / max", fmt.Sprintf("%s / %s / %s / %s", ms(p50), ms(p90), ms(p99), ms(mx)),
		fmt.Sprintf("%d orders, keep-alive client", o.latency))
	rep.detail("latency CPU", cpuPerOrder(cpu0, cpu1, o.latency), "")
	rep.detail("floor: GET /healthz", durStats(healthz), "HTTP round trip on a keep-alive connection")
	rep.detail("floor: GET /v1/orders/{id}", durStats(get), "auth, one PostgreSQL read, JSON")
	rep.detail("… of which submitted_at → started_at", durStats(queue),
		"insert commit (fsync), JetStream publish (fsync) + PubAck, delivery to the worker, Claim start")
	rep.detail("… of which started_at → finished_at", durStats(runS), "as in the backlog")
	rep.detail("… of which outside submitted_at…finished_at", durStats(outside),
		"HTTP + auth + validation before the insert; Complete commit, finished event, GetOrder and JSON after")
	progress(fmt.Sprintf("latency: p50 %s p90 %s p99 %s max %s", ms(p50), ms(p90), ms(p99), ms(mx)))
	return nil
}

func asyncSubmit(ctx context.Context, c *client, srv *server, o options, rep *report) error {
	cpu0 := srv.cpu()
	progress(fmt.Sprintf("async: %d POSTs (202) from %d goroutines to host %q (no worker)", o.async, o.asyncWorkers, o.nowhereHost))
	body := orderBody(o.nowhereHost, "true")
	lat := make([]time.Duration, o.async)
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	t0 := time.Now()
	for g := 0; g < o.asyncWorkers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= o.async {
					return
				}
				t := time.Now()
				code, _, err := c.submit(ctx, body, "")
				if err == nil && code != http.StatusAccepted {
					err = fmt.Errorf("answered %d, not 202", code)
				}
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				lat[i] = time.Since(t)
			}
		}()
	}
	wg.Wait()
	d := time.Since(t0)
	cpu1 := srv.cpu()
	if firstErr != nil {
		return fmt.Errorf("async submit: %w", firstErr)
	}
	rate := float64(o.async) / d.Seconds()
	rep.row("async submit rate (202, no wait)", fmt.Sprintf("%.0f submits/s", rate), "≥ 5,000/s", ptr(rate >= 5000))
	rep.detail("async submit latency", durStats(lat), fmt.Sprintf("per POST with %d in flight", o.asyncWorkers))
	rep.detail("async submit CPU", cpuPerOrder(cpu0, cpu1, o.async), "")
	progress(fmt.Sprintf("async: %.0f submits/s (p50 %s)", rate, ms(pct(lat, 0.5))))
	return nil
}
