package api_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestStage0ExecuteWhoseLiveOutputCannotBeReadEndsWhole: a stage0
// execute whose live output cannot be read as it starts is answered
// whole, its lines and done from what PostgreSQL stored, not cut; once
// the live stream can be read again, its lines come live. The live
// stream is unreadable here because it is at its cap of consumers
// (nats-server 2.15 caps a stream at 1,000 unless it says otherwise): a
// follow's consumer is refused, as it is while a NATS cluster elects the
// stream's leader after its node was killed or frozen (hJ20's probe: 5
// stage0 answers of 296 under those faults). The follow failed there,
// and the handler, past its 200, cut the stream before any event (the
// client read "unexpected EOF" and an empty body) while the run went on
// and succeeded: a client told nothing of a run that happened runs it
// again.
func TestStage0ExecuteWhoseLiveOutputCannotBeReadEndsWhole(t *testing.T) {
	for _, c := range []struct {
		name string
		lift bool // the cap lifted while the run waits: its next line comes live
	}{
		{name: "unreadable throughout"},
		{name: "readable again during the run", lift: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newAPIEnv(t, envOptions{hosts: []string{"h1"}})
			dir, gates := t.TempDir(), t.TempDir()
			gate := func(name string) string { return filepath.Join(gates, name) }
			script := "echo one\n" +
				"while [ ! -e " + gate("go") + " ]; do sleep 0.05; done\n" +
				"echo two\n" +
				"while [ ! -e " + gate("end") + " ]; do sleep 0.05; done\n" +
				"echo three"
			if err := os.WriteFile(filepath.Join(dir, "Hello.md"), []byte(stage0Runbook("Hello", "{}", "", script)), 0o644); err != nil {
				t.Fatal(err)
			}
			touch := func(name string) {
				t.Helper()
				if err := os.WriteFile(gate(name), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			defer func() { _ = os.WriteFile(gate("end"), nil, 0o644) }()
			url, token := startStage0(t, e, dir)

			// The live stream full: one consumer of the test's, and a
			// cap of as many as it then has.
			ctx := testenv.Context(t)
			js := testenv.JetStream(t, e.natsURL, "live-cap")
			st, err := js.Stream(ctx, queue.LiveStream)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "taken", AckPolicy: jetstream.AckNonePolicy}); err != nil {
				t.Fatal(err)
			}
			info, err := st.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			cfg := info.Config
			cfg.MaxConsumers = info.State.Consumers
			if _, err := js.UpdateStream(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			if _, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "one-more", AckPolicy: jetstream.AckNonePolicy}); !errors.Is(err, jetstream.ErrMaximumConsumersLimit) {
				t.Fatalf("a consumer past the live stream's cap: %v, want refused", err)
			}

			resp := executeStage0(t, url, token, "Hello.md")
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("execute answered %d", resp.StatusCode)
			}
			s := readStage0Stream(resp.Body)
			if c.lift {
				// The first line was printed while nothing could follow
				// it; the next comes live once a poll (2 s) finds the
				// stream readable, with the first before it.
				testenv.WaitUntil(t, time.Minute, "the run's first line in the live stream", func() bool {
					m, err := st.GetLastMsgForSubject(ctx, queue.OutputSubject+"h1.>")
					return err == nil && len(m.Data) > 0
				})
				if err := js.DeleteConsumer(ctx, queue.LiveStream, "taken"); err != nil {
					t.Fatal(err)
				}
				touch("go")
				testenv.WaitUntil(t, time.Minute, "the first two lines, live", func() bool { return s.stdout() == "one\ntwo\n" })
			} else {
				touch("go")
			}
			touch("end")
			done := s.wait()
			if done.ReturnCode != 0 || done.Stdout != "one\ntwo\nthree\n" {
				t.Fatalf("done: rc %d, stdout %q; want 0 and the run's three lines (a stream cut before its done reads as an empty one)", done.ReturnCode, done.Stdout)
			}
			if got := s.stdout(); got != "one\ntwo\nthree\n" {
				t.Errorf("the stdout events hold %q, want the run's three lines", got)
			}
		})
	}
}
