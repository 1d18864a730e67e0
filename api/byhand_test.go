package api_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestStreamsDeletedByHandAreMadeAgain: an operator deletes one of
// orderly's streams or buckets while orders flow (`nats stream rm`, `nats
// kv rm`), with no restart of anything. The workers may not make them;
// the API makes each again by itself within queue.MendEvery, with an
// ERROR line naming the stream, what was lost and where the docs say
// more, and what the stream serves works again: a running order's live
// output reaches the live stream, NATS submissions are taken, the host's
// worker holds its lease and shows online. (The marks bucket was made
// again before, by the API's next raise of the publish generation, about
// a second after its deletion here.) Before, only a NATS reconnect (the live stream), a follower's
// request (the live stream) or the loss of the orders stream too made
// them again: NATS publishers were refused "no response from stream",
// every worker's lease renewal failed and its host showed offline, until
// an API restarted.
func TestStreamsDeletedByHandAreMadeAgain(t *testing.T) {
	cases := []struct {
		name, stream string
		// before runs before the deletion, after checks after it that
		// what the stream serves works again.
		before func(r *handsRun) uuid.UUID
		after  func(r *handsRun, running uuid.UUID)
	}{
		{"live", queue.LiveStream, func(r *handsRun) uuid.UUID {
			r.rest("talker", "while [ ! -e "+filepath.Join(r.dir, "end")+" ]; do echo line; sleep 0.1; done")
			r.t.Cleanup(func() { _ = os.WriteFile(filepath.Join(r.dir, "end"), nil, 0o644) })
			testenv.WaitUntil(r.t, 30*time.Second, "the order's first chunk in the live stream", func() bool {
				return r.liveChunk(r.ids["talker"])
			})
			return r.ids["talker"]
		}, func(r *handsRun, running uuid.UUID) {
			testenv.WaitUntil(r.t, 30*time.Second, "a chunk of the running order in the live stream made again", func() bool {
				return r.liveChunk(running)
			})
		}},
		{"submit", queue.SubmitStream, nil, func(r *handsRun, _ uuid.UUID) {
			r.overNATS("after", "")
			r.e.waitOrder(r.ids["after"], "succeeded")
		}},
		{"hosts", "KV_" + queue.HostsBucket, nil, func(r *handsRun, _ uuid.UUID) {
			testenv.WaitUntil(r.t, 30*time.Second, "the host online again", func() bool {
				code, b := r.e.do("admin", http.MethodGet, "/v1/hosts/"+r.host, nil)
				var h struct {
					Online bool `json:"online"`
				}
				return code == http.StatusOK && json.Unmarshal(b, &h) == nil && h.Online
			})
			r.rest("after", "")
			r.e.waitOrder(r.ids["after"], "succeeded")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var logs testenv.LogBuffer
			r := newHandsRunLogging(t, testenv.LoggerTo(io.MultiWriter(&logs, t.Output())))
			r.rest("first", "")
			r.e.waitOrder(r.ids["first"], "succeeded")
			var running uuid.UUID
			if c.before != nil {
				running = c.before(r)
			}
			ctx := testenv.Context(t)
			// Twice: the first may meet the API's first look; the second
			// is made again by a look after it, at its period.
			for range 2 {
				var err error
				if name, ok := strings.CutPrefix(c.stream, "KV_"); ok {
					err = r.js.DeleteKeyValue(ctx, name)
				} else {
					err = r.js.DeleteStream(ctx, c.stream)
				}
				orFail(t, err)
				deleted := time.Now()
				testenv.WaitUntil(t, 30*time.Second, c.stream+" made again", func() bool {
					_, err := r.js.Stream(ctx, c.stream)
					return !errors.Is(err, jetstream.ErrStreamNotFound)
				})
				t.Logf("%s made again %v after its deletion", c.stream, time.Since(deleted).Round(time.Millisecond))
				c.after(r, running)
			}
			line := ""
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, "level=ERROR") && strings.Contains(l, "stream="+c.stream+" ") {
					line = l
				}
			}
			if !strings.Contains(line, "made it again") || !strings.Contains(line, queue.HandsHint) {
				t.Errorf("no ERROR line naming %s, saying it was made again, with the hint: %q", c.stream, line)
			}
		})
	}
}

// liveChunk reports whether the live stream holds an output chunk of the
// order id of the run's host.
func (r *handsRun) liveChunk(id uuid.UUID) bool {
	ctx := testenv.Context(r.t)
	st, err := r.js.Stream(ctx, queue.LiveStream)
	if err != nil {
		return false
	}
	m, err := st.GetLastMsgForSubject(ctx, queue.OutputSubjectOf(r.host, id))
	return err == nil && m.Header.Get(queue.StreamHeader) != ""
}

// TestStreamLimitsSetByHandAreSetBack: an operator sets a limit on the
// orders stream (`nats stream edit ORDERLY_ORDERS --max-msgs-per-subject
// 1`, or a max age, max bytes, max messages), or an age on the
// submissions stream: JetStream removes queued orders' messages, or
// submissions not yet taken, past it, and those orders never run. The
// API sets the limits back to orderly's within queue.MendEvery, with a
// WARN naming the stream and the limit, and queued orders keep their
// messages. Before, the limit stayed until the API's next start.
func TestStreamLimitsSetByHandAreSetBack(t *testing.T) {
	cases := []struct {
		name, stream, changed string
		change                func(c *jetstream.StreamConfig)
		back                  func(c jetstream.StreamConfig) bool
		// after, when set, checks that the stream keeps what it must.
		after func(r *handsRun)
	}{
		{"orders", queue.OrdersStream, "max_msgs_per_subject 1",
			func(c *jetstream.StreamConfig) { c.MaxMsgsPerSubject = 1 },
			func(c jetstream.StreamConfig) bool { return c.MaxMsgsPerSubject <= 0 },
			func(r *handsRun) {
				// No worker serves this host: its orders stay queued, one
				// message each, which the limit would have cut to the last.
				var ids []uuid.UUID
				for range 3 {
					o := r.e.submit("alice", map[string]any{"host": "unserved", "command": "true"}, "", http.StatusAccepted)
					ids = append(ids, o.ID)
				}
				missing, err := r.e.q.Missing(testenv.Context(r.t), "unserved", ids, 100)
				orFail(r.t, err)
				if len(missing) > 0 {
					r.t.Errorf("queued orders whose messages are gone: %v of %v", missing, ids)
				}
			}},
		{"submit", queue.SubmitStream, "max_age 1h0m0s",
			func(c *jetstream.StreamConfig) { c.MaxAge = time.Hour },
			func(c jetstream.StreamConfig) bool { return c.MaxAge == 0 },
			func(r *handsRun) {
				r.overNATS("after", "")
				r.e.waitOrder(r.ids["after"], "succeeded")
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var logs testenv.LogBuffer
			r := newHandsRunLogging(t, testenv.LoggerTo(io.MultiWriter(&logs, t.Output())))
			ctx := testenv.Context(t)
			// Twice: the first may meet the API's first look; the second
			// is set back by a look after it, at its period.
			for range 2 {
				editStream(t, ctx, r.js, c.stream, c.change)
				edited := time.Now()
				testenv.WaitUntil(t, 30*time.Second, c.stream+"'s limit set back", func() bool {
					st, err := r.js.Stream(ctx, c.stream)
					return err == nil && c.back(st.CachedInfo().Config)
				})
				t.Logf("the limit was set back %v after the edit", time.Since(edited).Round(time.Millisecond))
				c.after(r)
			}
			if !strings.Contains(logs.String(), `level=WARN msg="a JetStream stream's limits were changed by hand`) ||
				!strings.Contains(logs.String(), `stream=`+c.stream+` changed="`+c.changed+`"`) {
				t.Errorf("no WARN naming the stream %s and its limit %q", c.stream, c.changed)
			}
		})
	}
}

// TestLeaseDeletedByHandLeavesTheRunningOrder: an operator deletes a
// host's lease key (`nats kv del orderly_hosts lease.<host>`) while its
// worker runs a long order and a standby waits. The delete is not the
// holder's release: the standby leaves the key to the holder, which takes
// it again at its next renewal, and the order runs to its end, once, and
// the host's next orders after it. Before, the standby took the host at
// once, as after a release, killed the running order's processes and
// ended it interrupted, with its worker alive.
func TestLeaseDeletedByHandLeavesTheRunningOrder(t *testing.T) {
	var logs testenv.LogBuffer
	r := newHandsRunLogging(t, testenv.LoggerTo(io.MultiWriter(&logs, t.Output())))
	startBoundWorker(t, r.e, r.e.natsURL, r.host) // the standby
	gate := filepath.Join(r.dir, "gate")
	r.rest("L", "while [ ! -e "+gate+" ]; do sleep 0.05; done")
	testenv.WaitUntil(t, 30*time.Second, "the long order running", func() bool {
		return r.e.order(r.ids["L"]).Status == "running"
	})
	testenv.WaitUntil(t, 30*time.Second, "a standby waiting", func() bool {
		return strings.Contains(logs.String(), "waiting as standby")
	})
	r.rest("B", "")
	ctx := testenv.Context(t)
	kv, err := r.js.KeyValue(ctx, queue.HostsBucket)
	orFail(t, err)
	orFail(t, kv.Delete(ctx, "lease."+r.host))
	// Past the lease (2 s): a holder that did not take its key again
	// would have lost it by now.
	time.Sleep(3 * time.Second)
	orFail(t, os.WriteFile(gate, nil, 0o644))
	r.rest("A", "")
	status := r.settle(60 * time.Second)
	r.checkContract(status)
	for _, l := range []string{"L", "B", "A"} {
		if status[l] != "succeeded" {
			t.Errorf("order %s is %s, want succeeded (statuses %v)", l, status[l], status)
		}
	}
	if !strings.Contains(logs.String(), "deleted without its holder releasing it") {
		t.Errorf("no line of the standby saying it leaves the deleted key to its holder")
	}
}
