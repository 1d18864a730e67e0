package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
)

// TestBinaryStreams sends random bytes (NUL included) through cat and gets
// them back identical in base64 and in Ascii85.
func TestBinaryStreams(t *testing.T) {
	s := newStack(t, "io")
	data := make([]byte, 70000)
	_, _ = rand.Read(data)
	copy(data, []byte{0, 0, 0, 0, 0xff})
	for _, enc := range []string{"base64", "base85"} {
		in, _ := order.Encode(data, order.Encoding(enc))
		o := s.submit(map[string]any{"host": "io", "command": "cat",
			"stdin": map[string]any{"content": in, "encode": enc}, "stdout": map[string]any{"encode": enc}}, "?wait=20", http.StatusOK)
		if o.Result == nil || o.Result.Stdout.Encode == nil || *o.Result.Stdout.Encode != enc {
			t.Fatalf("%s: result %+v", enc, o.Result)
		}
		back, err := order.Decode(o.Result.Stdout.Content, order.Encoding(enc))
		if err != nil || !bytes.Equal(back, data) {
			t.Fatalf("%s: bytes differ (%v)", enc, err)
		}
		sum := sha256.Sum256(data)
		if o.Result.Stdout.SHA256 != hex.EncodeToString(sum[:]) || o.Result.Stdout.Bytes != int64(len(data)) {
			t.Fatalf("%s: sha/bytes wrong", enc)
		}
	}
	// Text stdin (a JSON string) works too.
	o := s.submit(map[string]any{"host": "io", "command": "cat", "stdin": "plain text\n"}, "?wait=20", http.StatusOK)
	if o.Result.Stdout.Content != "plain text\n" {
		t.Fatalf("text stdin: %q", o.Result.Stdout.Content)
	}
	// Invalid UTF-8 with encode null switches to base64; nothing is lost.
	code, b := s.do("POST", "/v1/orders?wait=20", map[string]any{"host": "io", "command": "printf", "args": []string{`a\377\376b`}})
	if code != 200 || !strings.Contains(string(b), `"switched_to_base64":true`) {
		t.Fatalf("invalid utf-8: %d %s", code, b)
	}
	var raw api.Order
	_ = json.Unmarshal(b, &raw)
	got, _ := base64.StdEncoding.DecodeString(raw.Result.Stdout.Content)
	if !bytes.Equal(got, []byte{'a', 0xff, 0xfe, 'b'}) {
		t.Fatalf("invalid utf-8 bytes: %x", got)
	}
	// No stdin given: /dev/null, so cat ends at once.
	if o := s.submit(map[string]any{"host": "io", "command": "cat"}, "?wait=20", http.StatusOK); o.Status != "succeeded" {
		t.Fatalf("cat without stdin: %s", o.Status)
	}
}

// TestOutputCap prints 30 MB: the stored output is capped (head and tail),
// while the byte count and the hash cover all 30 MB.
func TestOutputCap(t *testing.T) {
	s := newStack(t, "big")
	const n = 30 << 20
	o := s.submit(map[string]any{"host": "big", "command": "head", "args": []string{"-c", strconv.Itoa(n), "/dev/zero"},
		"stdout": map[string]any{"encode": "base64"}, "max_output_bytes": 1 << 20}, "?wait=60", http.StatusOK)
	out := o.Result.Stdout
	want := sha256.Sum256(make([]byte, n))
	if out.Bytes != n || !out.Truncated || out.SHA256 != hex.EncodeToString(want[:]) {
		t.Fatalf("bytes %d truncated %v sha %s", out.Bytes, out.Truncated, out.SHA256)
	}
	kept, _ := base64.StdEncoding.DecodeString(out.Content)
	if len(kept) < 1<<20 || len(kept) > 1<<20+200 || !bytes.Contains(kept, []byte("omitted")) {
		t.Fatalf("kept %d bytes", len(kept))
	}
}

// TestOutputsPastAMiBKeptFromTheirFile: an output past 1 MiB, which the
// worker's capture keeps in a file until the result is written
// (executor.SpillTo), is stored and answered byte for byte: whole within
// the cap (streamed from the file into PostgreSQL), head and tail past it
// (read back from the file to be cut).
func TestOutputsPastAMiBKeptFromTheirFile(t *testing.T) {
	s := newStack(t, "spill")
	stream := func(n int) []byte { // what `seq` prints, cut at n bytes
		var b bytes.Buffer
		for i := 1; b.Len() < n; i++ {
			fmt.Fprintf(&b, "%d\n", i)
		}
		return b.Bytes()[:n]
	}
	for _, c := range []struct{ n, limit int }{{3<<20 + 1, 4 << 20}, {5 << 20, 2<<20 + 1}} {
		full := stream(c.n)
		o := s.submit(map[string]any{"host": "spill", "command": "sh", "args": []string{"-c", "seq 1 9999999 | head -c " + strconv.Itoa(c.n)},
			"max_output_bytes": c.limit}, "?wait=60", http.StatusOK)
		out := o.Result.Stdout
		sum := sha256.Sum256(full)
		if o.Status != "succeeded" || out.Bytes != int64(c.n) || out.SHA256 != hex.EncodeToString(sum[:]) {
			t.Fatalf("%d bytes under a cap of %d: %s, %d bytes, sha %s", c.n, c.limit, o.Status, out.Bytes, out.SHA256)
		}
		want := string(full)
		if c.n > c.limit {
			head, tail := c.limit/2, c.limit-c.limit/2
			want = string(full[:head]) + order.TruncationMarker(int64(c.n-c.limit)) + string(full[c.n-tail:])
		}
		if out.Content != want || out.Truncated != (c.n > c.limit) {
			t.Fatalf("%d bytes under a cap of %d: kept %d bytes (truncated %v), want %d", c.n, c.limit, len(out.Content), out.Truncated, len(want))
		}
	}
}

// pidsGone reports whether none of the pids is alive (zombies count as
// gone: the container's init may not reap them).
func pidsGone(pids []int) bool {
	for _, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:])); len(f) > 0 && f[0] != "Z" {
			return false
		}
	}
	return true
}

func readPids(t *testing.T, f string) []int {
	b, _ := os.ReadFile(f)
	var pids []int
	for _, w := range strings.Fields(string(b)) {
		if p, err := strconv.Atoi(w); err == nil {
			pids = append(pids, p)
		}
	}
	if len(pids) == 0 {
		t.Fatal("no pids recorded")
	}
	return pids
}

// stubborn is a command that forks children and ignores SIGTERM.
const stubborn = `trap "" TERM; sleep 100 & echo $! >> "$1"; sleep 100 & echo $! >> "$1"; echo $$ >> "$1"; wait`

// TestTimeoutKillsTheWholeGroup: a command that ignores SIGTERM and forks
// children is gone, children included, after its timeout.
func TestTimeoutKillsTheWholeGroup(t *testing.T) {
	s := newStack(t, "to")
	pf := filepath.Join(t.TempDir(), "pids")
	o := s.submit(map[string]any{"host": "to", "command": "sh", "timeout_seconds": 2,
		"args": []string{"-c", stubborn, "_", pf}}, "?wait=30", http.StatusOK)
	if o.Status != "timed_out" || o.Result.Signal == nil || *o.Result.Signal != "SIGKILL" {
		t.Fatalf("status %s result %+v", o.Status, o.Result)
	}
	if !pidsGone(readPids(t, pf)) {
		t.Fatal("processes of the order survived its timeout")
	}
}

// TestCancel covers a queued order (never starts), a running one (its
// whole group is signalled, then killed) and a finished one (409).
func TestCancel(t *testing.T) {
	s := newStack(t, "run")
	// Queued: a host without a worker.
	q := s.submit(map[string]any{"host": "idle", "command": "true"}, "", http.StatusAccepted)
	code, b := s.do("POST", "/v1/orders/"+q.ID.String()+"/cancel", map[string]any{"signal": "SIGTERM"})
	if code != 200 || !strings.Contains(string(b), `"status":"canceled"`) {
		t.Fatalf("cancel queued: %d %s", code, b)
	}
	// Canceled is finished: a second cancel is a conflict, and records
	// nothing more.
	code, b = s.do("POST", "/v1/orders/"+q.ID.String()+"/cancel", map[string]any{"signal": "SIGKILL"})
	wantError(t, code, b, 409, "conflict")
	if n := countRows(t, s.b.pool, `SELECT count(*) FROM order_events WHERE order_id = $1 AND type IN ('cancel_requested', 'canceled')`, q.ID); n != 2 {
		t.Fatalf("%d cancel events after a second cancel, want 2", n)
	}
	s.startWorker("idle")
	after := s.submit(map[string]any{"host": "idle", "command": "true"}, "?wait=20", http.StatusOK)
	if after.Status != "succeeded" || s.get(q.ID).Status != "canceled" || s.get(q.ID).StartedAt != nil {
		t.Fatal("a canceled order started")
	}

	// Running, ignoring SIGTERM: signalled, then killed after the grace.
	pf := filepath.Join(t.TempDir(), "pids")
	r := s.submit(map[string]any{"host": "run", "command": "sh", "timeout_seconds": 60,
		"args": []string{"-c", stubborn, "_", pf}}, "", http.StatusAccepted)
	s.waitFor(r.ID, 20*time.Second, func(o api.Order) bool {
		b, _ := os.ReadFile(pf)
		return o.Status == "running" && strings.Count(string(b), "\n") == 3
	})
	code, b = s.do("POST", "/v1/orders/"+r.ID.String()+"/cancel", map[string]any{"signal": "SIGTERM"})
	if code != http.StatusAccepted {
		t.Fatalf("cancel running: %d %s", code, b)
	}
	got := s.waitFor(r.ID, 20*time.Second, terminal)
	if got.Status != "killed" {
		t.Fatalf("canceled running order: %s", got.Status)
	}
	if !pidsGone(readPids(t, pf)) {
		t.Fatal("processes survived the cancel")
	}

	// Finished: conflict.
	code, b = s.do("POST", "/v1/orders/"+r.ID.String()+"/cancel", nil)
	wantError(t, code, b, 409, "conflict")
	code, b = s.do("POST", "/v1/orders/"+r.ID.String()+"/cancel", map[string]any{"signal": "SIGSEGV"})
	wantError(t, code, b, 400, "invalid_request")
}

// TestFinishedAnswersSayWhoCanceled: a client waiting for an order and
// one following its events learn who canceled it, as GET /v1/orders/{id}
// says: the wait's answer and the finished event are the order too.
func TestFinishedAnswersSayWhoCanceled(t *testing.T) {
	s := newStack(t)
	type answer struct {
		code int
		body []byte
		err  error
	}
	waited := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", s.url+"/v1/orders?wait=30",
			strings.NewReader(`{"host":"nobody-home","command":"true"}`))
		req.Header.Set("Authorization", "Bearer "+s.token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			waited <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		waited <- answer{resp.StatusCode, b, err}
	}()
	var id uuid.UUID
	for deadline := time.Now().Add(30 * time.Second); id == uuid.Nil; time.Sleep(20 * time.Millisecond) {
		_, b := s.do("GET", "/v1/orders?host=nobody-home", nil)
		var list api.OrderList
		if err := json.Unmarshal(b, &list); err != nil {
			t.Fatalf("list: %v: %s", err, b)
		}
		if len(list.Orders) > 0 {
			id = list.Orders[0].ID
		} else if time.Now().After(deadline) {
			t.Fatal("the waiting submission's order never showed")
		}
	}
	if code, b := s.do("POST", "/v1/orders/"+id.String()+"/cancel", map[string]any{"signal": "SIGKILL"}); code != http.StatusOK {
		t.Fatalf("cancel: %d %s", code, b)
	}
	saysWho := func(what string, b []byte) {
		t.Helper()
		var o api.Order
		if err := json.Unmarshal(b, &o); err != nil {
			t.Fatalf("%s: %v: %s", what, err, b)
		}
		if o.Status != "canceled" || o.Cancel == nil || o.Cancel.Actor != "admin" || o.Cancel.Signal != "SIGKILL" {
			t.Errorf("%s: status %s, cancel %+v, want canceled by admin with SIGKILL: %s", what, o.Status, o.Cancel, b)
		}
	}
	a := <-waited
	if a.err != nil || a.code != http.StatusOK {
		t.Fatalf("wait: %d %v: %s", a.code, a.err, a.body)
	}
	saysWho("the wait's answer", a.body)
	saysWho("GET", func() []byte { _, b := s.do("GET", "/v1/orders/"+id.String(), nil); return b }())
	evs := followEvents(t, s, id, "", func(e testEvent) bool { return e.event == "finished" })
	if last := evs[len(evs)-1]; last.event != "finished" {
		t.Fatalf("stream ended with %q", last.event)
	} else {
		saysWho("the finished event", []byte(last.data))
	}
}

// testEvent is one Server-Sent Event.
type testEvent struct {
	id, event, data string
}

// followEvents reads events until stop returns true or the stream ends.
func followEvents(t *testing.T, s *stack, id uuid.UUID, lastID string, stop func(testEvent) bool) []testEvent {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", s.url+"/v1/orders/"+id.String()+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+s.token)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var evs []testEvent
	var cur testEvent
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.event != "" {
				evs = append(evs, cur)
				if stop(cur) {
					return evs
				}
			}
			cur = testEvent{}
		case strings.HasPrefix(line, "id: "):
			cur.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			cur.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			cur.data = line[6:]
		}
	}
	return evs
}

func eventChunk(t *testing.T, e testEvent) string {
	var c api.Chunk
	if err := json.Unmarshal([]byte(e.data), &c); err != nil {
		t.Fatal(err)
	}
	return c.Data
}

// TestLiveOutputWithReconnect follows an order's output over SSE, drops
// the connection after the first chunk, resumes with Last-Event-ID and
// gets the rest exactly once; a finished order replays and ends with
// finished, which carries the output (its chunks left the live stream
// once the result was stored and the API heard the finished event).
func TestLiveOutputWithReconnect(t *testing.T) {
	s := newStack(t, "live")
	gate, end := filepath.Join(t.TempDir(), "gate"), filepath.Join(t.TempDir(), "end")
	// The order ends only once the resumed stream has its chunks: a resume
	// after the end would find them freed.
	o := s.submit(map[string]any{"host": "live", "command": "sh",
		"args": []string{"-c", `echo one; while [ ! -e "$1" ]; do sleep 0.02; done; echo two >&2; echo three
while [ ! -e "$2" ]; do sleep 0.02; done`, "_", gate, end}}, "", http.StatusAccepted)
	first := followEvents(t, s, o.ID, "", func(e testEvent) bool { return e.event == "stdout" })
	var names []string
	for _, e := range first {
		names = append(names, e.event)
	}
	if strings.Join(names, ",") != "queued,started,stdout" || eventChunk(t, first[2]) != "one\n" {
		t.Fatalf("first connection: %v", first)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Resume on another API replica: live events travel through JetStream.
	chunks := 0
	rest := followEvents(t, s.replica(), o.ID, first[2].id, func(e testEvent) bool {
		if e.event == "stdout" || e.event == "stderr" {
			if chunks++; chunks == 2 {
				if err := os.WriteFile(end, nil, 0o644); err != nil {
					t.Error(err)
				}
			}
		}
		return e.event == "finished"
	})
	var text []string
	for _, e := range rest {
		switch e.event {
		case "stdout", "stderr":
			text = append(text, e.event+":"+eventChunk(t, e))
		case "queued", "started":
			t.Fatalf("resumed stream repeated %s", e.event)
		}
	}
	// stdout and stderr are read concurrently: only each stream's own
	// order is defined.
	sort.Strings(text)
	if strings.Join(text, ",") != "stderr:two\n,stdout:three\n" {
		t.Fatalf("resumed chunks: %v", text)
	}
	last := rest[len(rest)-1]
	var fin api.Order
	if err := json.Unmarshal([]byte(last.data), &fin); err != nil || last.event != "finished" || fin.Status != "succeeded" {
		t.Fatalf("finished event: %+v", last)
	}
	// Replay of a finished order ends by itself: queued, then finished
	// with the output. The API freed its started event (and chunks) once
	// it heard the finished one (queue.FreeLive): waited for here, as a
	// replay within that moment would begin with started.
	waitUntil(t, 10*time.Second, "the finished order's started event freed", func() bool {
		st, err := s.b.queue.JetStream().Stream(t.Context(), queue.LiveStream)
		if err != nil {
			return false
		}
		subj := queue.EventSubjectOf("live", o.ID)
		info, err := st.Info(t.Context(), jetstream.WithSubjectFilter(subj))
		return err == nil && info.State.Subjects[subj] == 1
	})
	all := followEvents(t, s, o.ID, "", func(e testEvent) bool { return false })
	if len(all) != 2 || all[0].event != "queued" || all[1].event != "finished" || !strings.Contains(all[len(all)-1].data, `"content":"one\nthree\n"`) {
		t.Fatalf("replay: %v", all)
	}
}

// TestFanOut runs one command on three hosts matched by a glob.
func TestFanOut(t *testing.T) {
	s := newStack(t, "fan-1", "fan-2", "fan-3", "other")
	waitUntil(t, 10*time.Second, "all four hosts online", func() bool {
		code, b := s.do("GET", "/v1/hosts", nil)
		return code == 200 && strings.Count(string(b), `"online":true`) == 4
	})
	code, b := s.do("POST", "/v1/orders?wait=20", map[string]any{"hosts": []string{"fan-*"}, "command": "hostname"})
	if code != 200 {
		t.Fatalf("fan-out: %d %s", code, b)
	}
	var batch api.Batch
	if err := json.Unmarshal(b, &batch); err != nil {
		t.Fatal(err)
	}
	if len(batch.Orders) != 3 || batch.Counts["succeeded"] != 3 {
		t.Fatalf("batch: %s", b)
	}
	hosts := map[string]bool{}
	for _, o := range batch.Orders {
		hosts[o.Host] = true
	}
	if !hosts["fan-1"] || !hosts["fan-2"] || !hosts["fan-3"] || hosts["other"] {
		t.Fatalf("hosts: %v", hosts)
	}
	code, b = s.do("GET", "/v1/batches/"+batch.BatchID.String(), nil)
	if code != 200 || !strings.Contains(string(b), `"succeeded":3`) {
		t.Fatalf("batch summary: %d %s", code, b)
	}
	code, b = s.do("GET", "/v1/orders?batch="+batch.BatchID.String(), nil)
	if code != 200 || strings.Count(string(b), `"batch_id":"`+batch.BatchID.String()) != 3 {
		t.Fatalf("list by batch: %d %s", code, b)
	}
	code, b = s.do("POST", "/v1/orders", map[string]any{"hosts": []string{"nomatch-*"}, "command": "true"})
	wantError(t, code, b, 422, "unprocessable")
	code, b = s.do("POST", "/v1/orders", map[string]any{"hosts": []string{"a.>"}, "command": "true"})
	wantError(t, code, b, 400, "invalid_request")
}

// TestIdempotentRetries: the same Idempotency-Key returns the same order
// and runs the command once; over NATS, Nats-Msg-Id does the same.
func TestIdempotentRetries(t *testing.T) {
	s := newStack(t, "idem")
	f := filepath.Join(t.TempDir(), "count")
	body := map[string]any{"host": "idem", "command": "sh", "args": []string{"-c", `echo x >> "$1"`, "_", f}}
	var first uuid.UUID
	for i := range 3 {
		code, b := s.do("POST", "/v1/orders?wait=20", body, "Idempotency-Key", "deploy-42")
		if code != 200 {
			t.Fatalf("retry %d: %d %s", i, code, b)
		}
		var o api.Order
		_ = json.Unmarshal(b, &o)
		if i == 0 {
			first = o.ID
		} else if o.ID != first {
			t.Fatalf("retry %d created order %s, want %s", i, o.ID, first)
		}
	}
	if data, _ := os.ReadFile(f); strings.Count(string(data), "x") != 1 {
		t.Fatalf("ran %d times", strings.Count(string(data), "x"))
	}

	// NATS: the same Nats-Msg-Id twice makes one order.
	nc, err := nats.Connect(s.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for range 2 {
		m := nats.NewMsg(queue.SubmitSubject + "idem")
		m.Header.Set("Authorization", "Bearer "+s.token)
		m.Header.Set("Nats-Msg-Id", "nats-retry-1")
		m.Data, _ = json.Marshal(body)
		storeSubmission(t, nc, m)
	}
	// Both submissions are handled once the submit stream (a work queue)
	// is empty; only then is the count of orders final.
	waitSubmitsHandled(t, nc)
	waitUntil(t, 20*time.Second, "the NATS submission ran", func() bool {
		var done int
		_ = s.b.pool.QueryRow(ctxT(t), `SELECT count(*) FROM orders WHERE idempotency_key = 'nats-retry-1' AND status = 'succeeded'`).Scan(&done)
		return done == 1
	})
	var n int
	_ = s.b.pool.QueryRow(ctxT(t), `SELECT count(*) FROM orders WHERE idempotency_key = 'nats-retry-1'`).Scan(&n)
	if n != 1 {
		t.Fatalf("%d orders for one Nats-Msg-Id", n)
	}
	if data, _ := os.ReadFile(f); strings.Count(string(data), "x") != 2 {
		t.Fatalf("ran %d times in all, want 2", strings.Count(string(data), "x"))
	}
}

// TestNATSIntake: a publisher gets its answer on Orderly-Reply; a bad
// token is refused, answered and audited.
func TestNATSIntake(t *testing.T) {
	s := newStack(t, "nh")
	nc, err := nats.Connect(s.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	answers, err := nc.SubscribeSync("_INBOX.replies.me")
	if err != nil {
		t.Fatal(err)
	}
	send := func(token string, body any) map[string]any {
		m := nats.NewMsg(queue.SubmitSubject + "nh")
		m.Header.Set("Authorization", "Bearer "+token)
		m.Header.Set("Orderly-Reply", "_INBOX.replies.me")
		m.Data, _ = json.Marshal(body)
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		msg, err := answers.NextMsg(20 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var a map[string]any
		_ = json.Unmarshal(msg.Data, &a)
		return a
	}
	a := send(s.token, map[string]any{"command": "echo", "args": []string{"via nats"}})
	ord, ok := a["order"].(map[string]any)
	if !ok {
		t.Fatalf("answer: %v", a)
	}
	id := uuid.MustParse(ord["id"].(string))
	got := s.waitFor(id, 20*time.Second, terminal)
	if got.Status != "succeeded" || got.Result.Stdout.Content != "via nats\n" {
		t.Fatalf("nats order: %+v", got)
	}
	code, b := s.do("GET", "/v1/orders/"+id.String(), nil)
	if code != 200 || !strings.Contains(string(b), `"source":"nats"`) {
		t.Fatalf("source: %s", b)
	}

	a = send("ord_not-a-real-token", map[string]any{"command": "touch", "args": []string{"/tmp/should-not-exist"}})
	e, _ := a["error"].(map[string]any)
	if e == nil || e["code"] != "unauthenticated" {
		t.Fatalf("bad token answer: %v", a)
	}
	a = send(s.token, map[string]any{"host": "other", "command": "true"})
	if e, _ := a["error"].(map[string]any); e == nil || e["code"] != "invalid_request" {
		t.Fatalf("host mismatch answer: %v", a)
	}
	// An Orderly-Reply outside the reply inboxes is never answered: the API
	// would otherwise write with its own rights (here: a worker's lease).
	// (A host without a worker, so no lease renewal shows up here.)
	kvWatch, err := nc.SubscribeSync("$KV.orderly_hosts.lease.ghost")
	if err != nil {
		t.Fatal(err)
	}
	evil := nats.NewMsg(queue.SubmitSubject + "nh")
	evil.Header.Set("Orderly-Reply", "$KV.orderly_hosts.lease.ghost")
	evil.Data = []byte(`{"command":"true"}`)
	storeSubmission(t, nc, evil)
	// A NUL in the submission must not make the audit insert fail.
	nul := nats.NewMsg(queue.SubmitSubject + "nh")
	nul.Header.Set("Authorization", "Bearer ord_\x00bad")
	nul.Data = []byte(`{"command":"true"}`)
	storeSubmission(t, nc, nul)
	// Every submission is handled (audited, answered, then acked) once
	// the submit stream, a work queue, is empty. An answer into the KV
	// bucket would have been published before that ack on the API's
	// connection, so after a flush of ours it would be waiting here.
	waitSubmitsHandled(t, nc)
	var n int
	_ = s.b.pool.QueryRow(ctxT(t), `SELECT count(*) FROM rejections WHERE source = 'nats' AND code = 'unauthenticated'`).Scan(&n)
	if n != 3 {
		t.Fatalf("%d audited unauthenticated NATS submissions, want 3", n)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if pending, _, err := kvWatch.Pending(); err != nil || pending != 0 {
		var data []byte
		if m, err := kvWatch.NextMsg(time.Second); err == nil {
			data = m.Data
		}
		t.Fatalf("the API answered into the KV bucket (%d messages, %v): %s", pending, err, data)
	}
	var orders int
	_ = s.b.pool.QueryRow(ctxT(t), `SELECT count(*) FROM orders`).Scan(&orders)
	if orders != 1 {
		t.Fatalf("%d orders, want only the accepted one", orders)
	}
}

// TestDeadlinePassesWhileHostOffline: an order that reaches its worker
// after its deadline becomes expired and does not run.
func TestDeadlinePassesWhileHostOffline(t *testing.T) {
	s := newStack(t)
	f := filepath.Join(t.TempDir(), "ran")
	by := time.Now().Add(time.Second).UTC().Format(time.RFC3339Nano)
	o := s.submit(map[string]any{"host": "late", "command": "touch", "args": []string{f}, "deliver_by": by}, "", http.StatusAccepted)
	// The deadline passes while no worker serves the host: as PostgreSQL's
	// clock has it, which is the one the claim judges by.
	waitUntil(t, 10*time.Second, "the order's deadline passed", func() bool {
		var passed bool
		err := s.b.pool.QueryRow(ctxT(t), `SELECT expires_at < now() FROM orders WHERE id = $1`, o.ID).Scan(&passed)
		return err == nil && passed
	})
	s.startWorker("late")
	got := s.waitFor(o.ID, 20*time.Second, terminal)
	if got.Status != "expired" {
		t.Fatalf("status %s", got.Status)
	}
	if _, err := os.Stat(f); err == nil {
		t.Fatal("expired order ran")
	}
}

// storeSubmission publishes a NATS submission and waits for JetStream to
// have stored it (or dropped it as a duplicate), so that an empty submit
// stream afterwards means it was handled.
func storeSubmission(t *testing.T, nc *nats.Conn, m *nats.Msg) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(ctxT(t), m); err != nil {
		t.Fatalf("publish submission to %s: %v", m.Subject, err)
	}
}

// waitSubmitsHandled waits until every NATS submission has been taken and
// acknowledged by the API's intake: the submit stream is a work queue, so
// it is empty then. It fails at the deadline.
func waitSubmitsHandled(t *testing.T, nc *nats.Conn) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "NATS submissions handled", func() bool {
		st, err := js.Stream(ctxT(t), queue.SubmitStream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctxT(t))
		return err == nil && info.State.Msgs == 0
	})
}

// TestHostQueue shows a host's queue in execution order.
func TestHostQueue(t *testing.T) {
	s := newStack(t)
	var ids []uuid.UUID
	for range 3 {
		ids = append(ids, s.submit(map[string]any{"host": "q1", "command": "true"}, "", http.StatusAccepted).ID)
	}
	code, b := s.do("GET", "/v1/hosts/q1", nil)
	if code != 200 {
		t.Fatalf("host: %d %s", code, b)
	}
	var h api.Host
	_ = json.Unmarshal(b, &h)
	if h.QueueDepth == nil || *h.QueueDepth != 3 || len(h.Queued) != 3 {
		t.Fatalf("host queue: %s", b)
	}
	for i := range ids {
		if h.Queued[i].ID != ids[i] {
			t.Fatalf("queue order: %v vs %v", h.Queued, ids)
		}
	}
	code, b = s.do("GET", "/v1/hosts/a.b", nil)
	wantError(t, code, b, 400, "invalid_request")
}
