package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// loadResult is what a closed-loop load measured: every request's wall
// time and the CPU the processes involved used meanwhile.
type loadResult struct {
	n    int
	wall time.Duration
	lat  []time.Duration
	cpu  cpuDelta
}

func (r loadResult) rate() float64 { return float64(r.n) / r.wall.Seconds() }

// add merges another round of the same load into r (rates over the summed
// wall time, latencies pooled).
func (r *loadResult) add(o loadResult) {
	r.n += o.n
	r.wall += o.wall
	r.lat = append(r.lat, o.lat...)
	r.cpu.add(o.cpu)
}

// requester is one request of a load: i is the connection's index, hc its
// own client (one keep-alive connection each).
type requester func(ctx context.Context, hc *http.Client, i int) error

// closedLoop runs conns connections, each sending its next request as soon
// as the previous one answered, for d; sample reads the CPU counters of the
// processes under test before and after.
func closedLoop(ctx context.Context, conns int, d time.Duration, sample func() cpuSample, do requester) (loadResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var res loadResult
	var firstErr error
	clients := make([]*http.Client, conns)
	for i := range clients {
		clients[i] = &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 1,
			MaxConnsPerHost: 1, DisableCompression: true}}
		if err := do(ctx, clients[i], i); err != nil { // opens the connection, warms the path
			return res, err
		}
	}
	a := sample()
	start := time.Now()
	stopAt := start.Add(d)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			for time.Now().Before(stopAt) && ctx.Err() == nil {
				t := time.Now()
				if err := do(ctx, clients[i], i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					cancel()
					break
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			res.lat = append(res.lat, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.wall = time.Since(start)
	res.n = len(res.lat)
	res.cpu = delta(a, sample())
	for _, c := range clients {
		c.CloseIdleConnections()
	}
	return res, firstErr
}

// orderlySync is one POST /v1/orders?wait=10 of `true` to hosts[i mod
// len(hosts)], which must answer 200 succeeded.
func orderlySync(base, token string, hosts []string) requester {
	bodies := make([][]byte, len(hosts))
	for i, h := range hosts {
		bodies[i] = orderBody(h, "true")
	}
	return func(ctx context.Context, hc *http.Client, i int) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/orders?wait=10", bytes.NewReader(bodies[i%len(bodies)]))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return fmt.Errorf("sync submit: %w", err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("sync submit: read the answer: %w", err)
		}
		if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(`"status":"succeeded"`)) {
			return fmt.Errorf("sync submit: %d %.200s", resp.StatusCode, b)
		}
		return nil
	}
}
