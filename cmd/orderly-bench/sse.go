package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

var stampRE = regexp.MustCompile(`\b1[0-9]{18}\b`)

// sseFirstByte measures live output over SSE two ways, following each
// order to its end so the next one does not queue behind it:
//
//   - live: `sh -c 'sleep 0.1; date +%s%N; sleep 0.1'` writes once the
//     stream is surely open, and prints its own clock, so the latency from
//     the command's write to the client's read is measured directly;
//   - immediate: `sh -c 'date +%s%N; sleep 0.1'` writes as soon as it
//     starts, with the stream opened right after the 202: the first byte as
//     a client that submits and follows sees it (the chunk may then come
//     from the replay rather than live).
func sseFirstByte(ctx context.Context, c *client, o options, rep *report) error {
	progress(fmt.Sprintf("sse: %d live and %d immediate runs followed over GET /v1/orders/{id}/events", o.sseRuns, o.sseRuns))
	var live, fromSubmit, immWrite []time.Duration
	for i := 0; i < 2*o.sseRuns; i++ {
		immediate := i%2 == 1
		script := "sleep 0.1; date +%s%N; sleep 0.1"
		if immediate {
			script = "date +%s%N; sleep 0.1"
		}
		t0 := time.Now()
		_, or, err := c.submit(ctx, orderBody(o.backlogHost, "sh", "-c", script), "")
		if err != nil {
			return fmt.Errorf("sse: %w", err)
		}
		r, err := followSSE(ctx, c, or.ID)
		if err != nil {
			return fmt.Errorf("sse: %w", err)
		}
		if r.status == http.StatusNotFound {
			rep.row("SSE first-byte latency (command write → client read)", "pending: GET /v1/orders/{id}/events answered 404", "", nil)
			progress("sse: the endpoint answers 404; reported as pending")
			// Let the order finish so serve stops promptly.
			time.Sleep(300 * time.Millisecond)
			return nil
		}
		if r.status != http.StatusOK {
			return fmt.Errorf("sse: GET events answered %d: %s", r.status, r.body)
		}
		if r.stdoutAt.IsZero() || r.stamp.IsZero() {
			return fmt.Errorf("sse: no stdout event with the timestamp for order %s (events seen: %v)", or.ID, r.seen)
		}
		if immediate {
			fromSubmit = append(fromSubmit, r.stdoutAt.Sub(t0))
			immWrite = append(immWrite, r.stdoutAt.Sub(r.stamp))
		} else {
			live = append(live, r.stdoutAt.Sub(r.stamp))
		}
	}
	rep.row("SSE first-byte latency, live (command write → client read), median", ms(pct(live, 0.5)), "", nil)
	rep.detail("SSE live: command write → client read", durStats(live),
		"`sleep 0.1; date +%s%N; …`: the command prints its own clock; same machine")
	rep.detail("SSE immediate: POST → first stdout event read", durStats(fromSubmit),
		"`date +%s%N; …` with the stream opened right after the 202: submit, queue, claim, start, write, NATS, SSE")
	rep.detail("SSE immediate: command write → client read", durStats(immWrite), "includes opening the stream when the write came first")
	progress(fmt.Sprintf("sse: live write → read median %s; immediate: submit → read median %s", ms(pct(live, 0.5)), ms(pct(fromSubmit, 0.5))))
	return nil
}

type sseResult struct {
	status              int
	body                string
	startedAt, stdoutAt time.Time
	stamp               time.Time
	seen                []string
}

func followSSE(ctx context.Context, c *client, id string) (sseResult, error) {
	var res sseResult
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/orders/"+id+"/events", nil)
	if err != nil {
		return res, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "text/event-stream")
	// Its own transport: an SSE stream is not returned to the pool.
	hc := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	res.status = resp.StatusCode
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		res.body = strings.TrimSpace(string(b))
		return res, nil
	}
	br := bufio.NewReader(resp.Body)
	event := "message"
	var data []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return res, nil
			}
			return res, err
		}
		now := time.Now()
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if len(data) > 0 || event != "message" {
				res.seen = append(res.seen, event)
				d := strings.Join(data, "\n")
				switch event {
				case "started":
					if res.startedAt.IsZero() {
						res.startedAt = now
					}
				case "stdout":
					if res.stdoutAt.IsZero() {
						res.stdoutAt = now
						res.stamp = findStamp(d)
					}
				case "finished":
					return res, nil
				}
			}
			event, data = "message", nil
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			data = append(data, strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		}
	}
}

// findStamp finds the nanosecond clock `date +%s%N` printed, in the event
// data as text or in any base64 string value of it.
func findStamp(data string) time.Time {
	try := func(s string) time.Time {
		if m := stampRE.FindString(s); m != "" {
			ns, _ := strconv.ParseInt(m, 10, 64)
			return time.Unix(0, ns)
		}
		return time.Time{}
	}
	if t := try(data); !t.IsZero() {
		return t
	}
	var v any
	if json.Unmarshal([]byte(data), &v) != nil {
		return time.Time{}
	}
	var walk func(any) time.Time
	walk = func(v any) time.Time {
		switch x := v.(type) {
		case string:
			if b, err := base64.StdEncoding.DecodeString(x); err == nil {
				return try(string(b))
			}
		case map[string]any:
			for _, e := range x {
				if t := walk(e); !t.IsZero() {
					return t
				}
			}
		case []any:
			for _, e := range x {
				if t := walk(e); !t.IsZero() {
					return t
				}
			}
		}
		return time.Time{}
	}
	return walk(v)
}
