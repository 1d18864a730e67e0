package api_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestStage0ExecuteAcrossANATSRestart: a stage0 execute whose run goes on
// printing while nats-server restarts (its memory stream, the live
// output, lost) sends the run's output as stage0 would have: every line,
// once and in order, in its events and in done.stdout; past the cap, the
// lines of the stored copy's head (the output's first half-cap bytes)
// and the truncation warning.
//
// "live stream made again": an API that starts after the restart makes
// ORDERLY_LIVE again, and chunks printed after it come live past the ones
// the restart lost. The follow gave them as they came, after the gap, and
// then the stored output past the count of bytes it had given: lines
// were missing in the middle and repeated at the end. Now it gives no
// live chunk past a gap (each says where it starts) and the stored copy
// the rest.
//
// "past the cap": the follow wrote nothing of a truncated stored copy
// once any live byte had come, so the client had the five lines printed
// before the restart and the warning. Then it got the stored head's
// lines past them; now the worker publishes the run's chunks again once
// the stream is back (queue.LiveOutput), so nothing is lost live and the
// client gets what a run without a restart gives: the lines within the
// cap, and the warning.
func TestStage0ExecuteAcrossANATSRestart(t *testing.T) {
	for _, c := range []struct {
		name   string
		cap    int64
		remake bool
	}{
		{name: "live stream made again", remake: true},
		{name: "past the cap", cap: 4000},
	} {
		t.Run(c.name, func(t *testing.T) {
			ns := testenv.NATSServer(t, &server.Options{})
			e := newAPIEnv(t, envOptions{natsURL: ns.ClientURL(), hosts: []string{"h1"}, maxOutput: c.cap})
			dir := t.TempDir()
			gate := filepath.Join(t.TempDir(), "go-on")
			script := "for i in $(seq 1 5); do echo \"before $i\"; done\n" +
				"while [ ! -e " + gate + " ]; do sleep 0.05; done\n" +
				"for i in $(seq 1 400); do echo \"after $i of the long run\"; sleep 0.05; done"
			if err := os.WriteFile(filepath.Join(dir, "Long.md"), []byte(stage0Runbook("Long", "{}", "", script)), 0o644); err != nil {
				t.Fatal(err)
			}
			var full strings.Builder
			for i := 1; i <= 5; i++ {
				fmt.Fprintf(&full, "before %d\n", i)
			}
			for i := 1; i <= 400; i++ {
				fmt.Fprintf(&full, "after %d of the long run\n", i)
			}
			want, warning := full.String(), ""
			if c.cap > 0 {
				// The live output: the first cap bytes, to its last whole
				// line (stage0's events are lines).
				want = want[:c.cap]
				want = want[:strings.LastIndex(want, "\n")+1]
				warning = fmt.Sprintf("\n[WARNING: Output truncated due to size limit (%d bytes)]\n", c.cap)
			}

			url, token := startStage0(t, e, dir)
			resp := executeStage0(t, url, token, "Long.md")
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			var stream strings.Builder
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("the stream ended before the script's fifth line: %v", err)
				}
				stream.WriteString(line)
				if line == "data: before 5\n" {
					break
				}
			}
			testenv.NATSServerRestarted(t, ns)
			if c.remake {
				testenv.Queue(t, ns.ClientURL(), "another-api", queue.Options{})
			}
			if err := os.WriteFile(gate, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			rest, err := io.ReadAll(br)
			if err != nil {
				t.Fatal(err)
			}
			stream.Write(rest)

			var events strings.Builder
			var done struct {
				ReturnCode int    `json:"return_code"`
				Stdout     string `json:"stdout"`
				Stderr     string `json:"stderr"`
			}
			for _, b := range strings.Split(strings.TrimSuffix(stream.String(), "\n\n"), "\n\n") {
				name, data, _ := strings.Cut(b, "\n")
				data = strings.ReplaceAll(strings.TrimPrefix(data, "data: "), "\ndata: ", "\n")
				switch name {
				case "event: stdout":
					events.WriteString(data)
				case "event: done":
					if err := json.Unmarshal([]byte(data), &done); err != nil {
						t.Fatalf("done: %v: %q", err, data)
					}
				}
			}
			if done.ReturnCode != 0 || done.Stdout != want || done.Stderr != warning {
				t.Errorf("done: rc %d, stdout %d bytes %q, stderr %q\nwant 0, the %d bytes %q, stderr %q",
					done.ReturnCode, len(done.Stdout), ends(done.Stdout), done.Stderr, len(want), ends(want), warning)
			}
			if events.String() != want {
				t.Errorf("the stdout events hold %d bytes %q, want the %d bytes %q", events.Len(), ends(events.String()), len(want), ends(want))
			}
		})
	}
}

// ends is the beginning and the end of a long s.
func ends(s string) string {
	if len(s) <= 240 {
		return s
	}
	return s[:120] + " … " + s[len(s)-120:]
}
