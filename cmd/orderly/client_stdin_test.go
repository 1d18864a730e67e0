package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countingZeros is a stdin of n zero bytes that counts what was read.
type countingZeros struct{ n, read int64 }

func (z *countingZeros) Read(p []byte) (int, error) {
	if z.read >= z.n {
		return 0, io.EOF
	}
	k := min(int64(len(p)), z.n-z.read)
	clear(p[:k])
	z.read += k
	return int(k), nil
}

// TestCLISubmitBoundsStdin: `orderly submit --stdin -` read its whole
// standard input, however large, sent it and only then heard the server
// refuse it over limits.max_stdin_bytes (`cat /dev/zero | orderly submit
// --stdin -` grew until memory ran out). It now reads one byte past the
// server's default limit, or past --max-stdin-bytes /
// ORDERLY_MAX_STDIN_BYTES, and refuses before sending anything.
func TestCLISubmitBoundsStdin(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		http.Error(w, "unexpected", http.StatusTeapot)
	}))
	defer srv.Close()
	env := []string{"ORDERLY_URL=" + srv.URL, "ORDERLY_TOKEN=ord_abc"}
	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, make([]byte, 2000), 0o600); err != nil {
		t.Fatal(err)
	}
	submit := []string{"orderly", "submit", "--host", "h1"}
	for _, tc := range []struct {
		name     string
		env      []string
		args     []string
		stdin    int64
		maxRead  int64
		want     string
		requests int32
	}{
		{"default limit", nil, []string{"--stdin", "-"}, 64 << 20, 512<<10 + 1,
			"standard input is larger than 524288 bytes", 0},
		{"stdin-file -", nil, []string{"--stdin-file", "-"}, 64 << 20, 512<<10 + 1,
			"standard input is larger than 524288 bytes", 0},
		{"env", []string{"ORDERLY_MAX_STDIN_BYTES=1000"}, []string{"--stdin", "-"}, 1001, 1001,
			"standard input is larger than 1000 bytes", 0},
		{"file", nil, []string{"--max-stdin-bytes", "1000", "--stdin-file", big}, 0, 0,
			"--stdin-file " + big + " is larger than 1000 bytes", 0},
		{"raised", []string{"ORDERLY_MAX_STDIN_BYTES=1000"}, []string{"--max-stdin-bytes", "1048576", "--stdin", "-"}, 600 << 10, 600 << 10,
			"418", 1},
		{"bad env", []string{"ORDERLY_MAX_STDIN_BYTES=lots"}, []string{"--stdin", "-"}, 10, 0,
			`ORDERLY_MAX_STDIN_BYTES="lots"`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requests.Store(0)
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			in := &countingZeros{n: tc.stdin}
			var out, errb bytes.Buffer
			args := append(append(append([]string{}, submit...), tc.args...), "--", "cat")
			err := run(ctx, args, append(env, tc.env...), in, &out, &errb)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if in.read > tc.maxRead {
				t.Errorf("read %d bytes of stdin, want at most %d", in.read, tc.maxRead)
			}
			if n := requests.Load(); n != tc.requests {
				t.Errorf("%d requests sent, want %d", n, tc.requests)
			}
		})
	}
}
