package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/orderly-run/orderly/internal/queue"
)

// TestStage0ExecuteWhileTheLiveStreamsLeaderIsKilled: on a 3-node NATS
// cluster with orderly's accounts, the node leading the live stream is
// killed (everything else it led handed to the others first, so that the
// order is queued and run), and a stage0 execute is sent at once, while
// the live stream has no leader: its answer is the run's whole stream,
// its done included. hJ20's probe met this as a 200 whose body was cut
// before any event ("unexpected EOF") for a run that succeeded: the
// API's follow could not start its live feed and ended with an error,
// after the handler's 200.
func TestStage0ExecuteWhileTheLiveStreamsLeaderIsKilled(t *testing.T) {
	s, c, _ := newProbeStack(t)
	s.startWorker("h3")
	ctx := t.Context()
	js := c.jetStream(c.url(), "stage0-cluster-check")
	nc := js.Conn()

	var victim string
	waitUntil(t, time.Minute, "a leader of "+queue.LiveStream, func() bool {
		victim = streamLeader(ctx, js, queue.LiveStream)
		return victim != ""
	})
	// What the run needs, led elsewhere: the orders stream (the publish),
	// the host's consumer, the hosts and marks buckets, submissions.
	// A step-down that elects the victim again is asked once more.
	for _, stream := range []string{queue.OrdersStream, queue.SubmitStream, "KV_" + queue.HostsBucket, "KV_" + queue.MarksBucket} {
		waitUntil(t, time.Minute, stream+" led by another node than "+victim, func() bool {
			l := streamLeader(ctx, js, stream)
			if l == victim {
				_, _ = nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil, 5*time.Second)
			}
			return l != "" && l != victim
		})
	}
	consumer := queue.ConsumerName("h3")
	waitUntil(t, time.Minute, consumer+" led by another node than "+victim, func() bool {
		cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		ci, err := js.Consumer(cctx, queue.OrdersStream, consumer)
		if err != nil || ci.CachedInfo().Cluster == nil || ci.CachedInfo().Cluster.Leader == "" {
			return false
		}
		if ci.CachedInfo().Cluster.Leader == victim {
			_, _ = nc.Request("$JS.API.CONSUMER.LEADER.STEPDOWN."+queue.OrdersStream+"."+consumer, nil, 5*time.Second)
			return false
		}
		return true
	})

	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "ci", "roles": []string{"developer"},
		"iss": "dev-idp", "aud": "dev-api", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(probeStage0Secret))
	if err != nil {
		t.Fatal(err)
	}
	l := newFaultLoad(s, "h3")
	s.note("kill -9 nats %s (live stream leader)", victim)
	c.node(victim).kill9()
	if streamLeader(ctx, js, queue.LiveStream) != "" {
		t.Fatal("the live stream has a leader right after its leader's kill: the test proves nothing")
	}
	b, _ := json.Marshal(map[string]any{"env_vars": map[string]string{"PROBE_TAG": "s0-killed", "PROBE_MARKER": l.marker("h3"),
		"PROBE_LOCK": l.lock("h3")}})
	req, _ := http.NewRequestWithContext(ctx, "POST", s.apiURL+"/api/runbooks/Probe.md/execute", strings.NewReader(string(b)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || err != nil {
		t.Fatalf("execute answered %d, its body read %v: %q", resp.StatusCode, err, probeCut(string(body), 300))
	}
	ev := probeSSE(string(body))
	if len(ev) == 0 || !strings.HasPrefix(ev[len(ev)-1], "done ") || !strings.Contains(ev[len(ev)-1], `"success": true`) ||
		!strings.Contains(ev[len(ev)-1], `"return_code": 0`) {
		t.Fatalf("the stream ends without a successful done: %q", probeCut(string(body), 300))
	}
	c.start(victim)
}
