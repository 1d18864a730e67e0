package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// stage0Done is the done event of a stage0 stream.
type stage0Done struct {
	Success    bool     `json:"success"`
	Runbook    string   `json:"runbook"`
	ReturnCode int      `json:"return_code"`
	Stdout     string   `json:"stdout"`
	Stderr     string   `json:"stderr"`
	Errors     []string `json:"errors"`
	Warnings   []string `json:"warnings"`
}

// TestStage0CompatWire checks the bytes a stage0 client reads at the
// edges stage0's source shows (COMPAT.md §3): required-env's objects and
// truthiness, RUNBOOK_HEADERS as curl flags for eval, the run directory in
// RUNBOOK_EXEC_DIR_HOST, refusals framed inside the stream, output read
// with universal newlines, and the name of a file without a title.
func TestStage0CompatWire(t *testing.T) {
	t.Setenv("S0W_SET", "yes")
	t.Setenv("S0W_EMPTY", "")
	t.Setenv("ORDERLY_S0W_SECRET", "the API's own")
	const secret = "stage0-wire-test-secret-0123456789abcdef"
	dir := t.TempDir()
	books := map[string]string{
		"Env.md": runbookDoc("Env", "S0W_SET: Set on the service\nS0W_EMPTY: Empty on the service\nS0W_UNSET: Not set",
			"  []", "", "echo env"),
		"Two.md": runbookDoc("Two", "A_VAR: first\nB_VAR: second", "  []", "", "echo two"),
		"Own.md": runbookDoc("Own", "ORDERLY_S0W_SECRET: The API's own", "  []", "", `echo "$ORDERLY_S0W_SECRET"`),
		"Headers.md": runbookDoc("Headers", "{}", "  []", "", `printf '%s\n' "$RUNBOOK_HEADERS"
eval "set -- $RUNBOOK_HEADERS"
printf '<%s>\n' "$@"
[ "$RUNBOOK_EXEC_DIR_HOST" -ef . ] && echo "exec dir is the run dir"
touch 'zz";echo INJECTED;"'
eval printf "'[%s]\n'" $RUNBOOK_HEADERS`),
		"Cr.md":    runbookDoc("Cr", "{}", "  []", "", `printf 'a\r\nb\rc\n'; printf 'x\ry' >&2`),
		"Plain.md": "Just notes, no title line.\n",
		"Big.md":   runbookDoc("Big", "{}", "  - big.txt", "", "cat big.txt"),
		// Saved by a Windows editor, with one old Mac line end too.
		"Dos.md": strings.ReplaceAll(runbookDoc("Dos", "{}", "  []", "", "echo dos"), "\n", "\r\n") + "trailer\r",
	}
	for name, text := range books {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "big.txt"), []byte(strings.Repeat("x", 5000)), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newSecStack(t, fmt.Sprintf(`
policy:
  - {name: stage0, roles: [developer], hosts: ["*"], allow: ['^runbook:']}
runbooks: {dir: %q, timeout: 60s, host: wire, max_input_bytes: 4096}
compat:
  stage0: {enabled: true, jwt_secret: %q}
`, dir, secret), nil, "wire")
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "ci", "roles": []string{"developer"},
		"iss": "dev-idp", "aud": "dev-api", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) string {
		t.Helper()
		resp, b := s.send(call{method: "GET", path: path, token: tok})
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
		return strings.TrimSpace(string(b))
	}
	execute := func(file string, body any, hdr ...string) ([]sseEvent, stage0Done) {
		t.Helper()
		resp, b := s.send(call{method: "POST", path: "/api/runbooks/" + file + "/execute", token: tok, body: body, hdr: hdr})
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", file, resp.StatusCode, b)
		}
		ev := readSSE(t, string(b))
		var d stage0Done
		if last := ev[len(ev)-1]; last.name != "done" || json.Unmarshal([]byte(last.data), &d) != nil {
			t.Fatalf("%s: no done event in\n%s", file, b)
		}
		return ev[:len(ev)-1], d
	}

	t.Run("required-env lists objects and counts an empty value as missing", func(t *testing.T) {
		set := `{"description":"Set on the service","name":"S0W_SET"}`
		empty := `{"description":"Empty on the service","name":"S0W_EMPTY"}`
		unset := `{"description":"Not set","name":"S0W_UNSET"}`
		want := `{"available":[` + set + `],"filename":"Env.md","missing":[` + empty + `,` + unset + `],` +
			`"required":[` + set + `,` + empty + `,` + unset + `],"success":true}`
		if got := get("/api/runbooks/Env.md/required-env"); got != want {
			t.Errorf("required-env:\n got %s\nwant %s", got, want)
		}
		// orderly's own variables configure the API: never a runbook's.
		own := `{"description":"The API's own","name":"ORDERLY_S0W_SECRET"}`
		want = `{"available":[],"filename":"Own.md","missing":[` + own + `],"required":[` + own + `],"success":true}`
		if got := get("/api/runbooks/Own.md/required-env"); got != want {
			t.Errorf("required-env of orderly's own variable:\n got %s\nwant %s", got, want)
		}
	})

	t.Run("a file without a title is named by its file", func(t *testing.T) {
		if got := get("/api/runbooks/Plain.md"); !strings.Contains(got, `"name":"Plain.md"`) {
			t.Errorf("get: %s", got)
		}
	})

	t.Run("a runbook's content is read as text, CRLF as LF", func(t *testing.T) {
		// stage0 read the file in Python's text mode (universal newlines).
		var got struct{ Content string }
		if err := json.Unmarshal([]byte(get("/api/runbooks/Dos.md")), &got); err != nil ||
			got.Content != runbookDoc("Dos", "{}", "  []", "", "echo dos")+"trailer\n" {
			t.Errorf("content %q (%v)", got.Content, err)
		}
	})

	t.Run("RUNBOOK_HEADERS are curl flags that eval gives back exactly", func(t *testing.T) {
		// The correlation id is the client's: eval must not run it.
		// Its white space, glob characters and % are percent-encoded in
		// RUNBOOK_HEADERS, so stage0's unquoted idiom (eval curl …
		// $RUNBOOK_HEADERS) neither splits it nor matches file names with
		// it (the script makes one that would have run a command).
		const corr = `c1" $(echo pwned) ` + "`echo pwned`" + ` \ *  x%`
		const sent = `c1"%20$(echo%20pwned)%20` + "`echo%20pwned`" + `%20\%20%2A%20%20x%25`
		const quoted = `c1\"%20\$(echo%20pwned)%20` + "\\`echo%20pwned\\`" + `%20\\%20%2A%20%20x%25`
		_, d := execute("Headers.md", nil, "X-Correlation-Id", corr)
		lines := strings.Split(d.Stdout, "\n")
		flags := regexp.MustCompile(`^-H "X-Recursion-Stack: \[\\"Headers\.md\\"\]" -H "X-Correlation-Id: ` +
			regexp.QuoteMeta(quoted) + `" -H "Authorization: Bearer orderly-rb-\*+" -H "Content-Type: application/json"$`) // the token masked (worker/executor capture)
		if d.ReturnCode != 0 || len(lines) < 10 || !flags.MatchString(lines[0]) {
			t.Fatalf("RUNBOOK_HEADERS: rc %d stdout %q stderr %q", d.ReturnCode, d.Stdout, d.Stderr)
		}
		args := lines[1:9]
		want := []string{"<-H>", `<X-Recursion-Stack: ["Headers.md"]>`, "<-H>", "<X-Correlation-Id: " + sent + ">", "<-H>",
			args[5], "<-H>", "<Content-Type: application/json>"}
		if !slices.Equal(args, want) || !strings.HasPrefix(args[5], "<Authorization: Bearer orderly-rb-") {
			t.Errorf("eval gave %q, want %q", args, want)
		}
		if lines[9] != "exec dir is the run dir" {
			t.Errorf("RUNBOOK_EXEC_DIR_HOST is not the run directory: %q", d.Stdout)
		}
		// The unquoted idiom gives the same eight arguments, and runs nothing.
		unquoted := lines[10:min(len(lines), 18)]
		for i := range unquoted {
			unquoted[i] = "<" + strings.TrimSuffix(strings.TrimPrefix(unquoted[i], "["), "]") + ">"
		}
		if !slices.Equal(unquoted, want) || strings.Contains(d.Stdout+d.Stderr, "INJECTED") {
			t.Errorf("eval printf … $RUNBOOK_HEADERS gave %q (stderr %q), want %q", lines[10:], d.Stderr, want)
		}
	})

	t.Run("a client's recursion stack is split-safe in RUNBOOK_HEADERS", func(t *testing.T) {
		// X-Recursion-Stack is the client's too: a name of "x * y" made
		// the unquoted idiom paste the run directory's file names, one of
		// them made to run a command, into what eval ran.
		_, d := execute("Headers.md", nil, "X-Recursion-Stack", `["x * y"]`)
		lines := strings.Split(d.Stdout, "\n")
		if d.ReturnCode != 0 || len(lines) < 11 ||
			!strings.HasPrefix(lines[0], `-H "X-Recursion-Stack: [\"x%20%2A%20y\", \"Headers.md\"]" -H "X-Correlation-Id: `) {
			t.Fatalf("RUNBOOK_HEADERS: rc %d stdout %q stderr %q", d.ReturnCode, d.Stdout, d.Stderr)
		}
		if want := `[X-Recursion-Stack: ["x%20%2A%20y", "Headers.md"]]`; lines[11] != want || strings.Contains(d.Stdout+d.Stderr, "INJECTED") {
			t.Errorf("eval printf … $RUNBOOK_HEADERS gave %q (stderr %q), want %q second", lines[10:], d.Stderr, want)
		}
	})

	t.Run("validate refuses what execute refuses: inputs past max_input_bytes", func(t *testing.T) {
		const tooLarge = "The script and its input files are larger than runbooks.max_input_bytes (4096 bytes)"
		resp, b := s.send(call{method: "PATCH", path: "/api/runbooks/Big.md/validate", token: tok})
		if want := `{"errors":["` + tooLarge + `"],"runbook":"Big.md","success":false,"warnings":[]}`; resp.StatusCode != 400 ||
			strings.TrimSpace(string(b)) != want {
			t.Errorf("validate: %d %s, want 400 %s", resp.StatusCode, b, want)
		}
		if _, d := execute("Big.md", nil); d.ReturnCode != 1 || d.Stderr != tooLarge {
			t.Errorf("execute: done %+v", d)
		}
	})

	t.Run("refusals are one event and a done without a final newline", func(t *testing.T) {
		const missing = "Required environment variable not set: A_VAR\nRequired environment variable not set: B_VAR"
		// The runbook is validated before the names are: a bad name with
		// a variable missing reports the missing one, as stage0 did.
		for _, body := range []any{nil, map[string]any{"env_vars": map[string]any{"BAD NAME": "x"}}} {
			ev, d := execute("Two.md", body)
			if len(ev) != 1 || ev[0] != (sseEvent{"stderr", missing}) {
				t.Errorf("%v: events %q", body, ev)
			}
			if d.Stderr != missing || d.ReturnCode != 1 || !slices.Equal(d.Errors, strings.Split(missing, "\n")) ||
				len(d.Warnings) != 0 {
				t.Errorf("%v: done %+v", body, d)
			}
		}
		const bad = "ERROR: Invalid environment variable name: BAD NAME"
		ev, d := execute("Two.md", map[string]any{"env_vars": map[string]any{"BAD NAME": "x", "A_VAR": "1", "B_VAR": "2"}})
		if len(ev) != 1 || ev[0] != (sseEvent{"stderr", bad + "\n"}) {
			t.Errorf("bad name: events %q", ev)
		}
		if d.Stderr != bad || d.ReturnCode != 1 || d.Errors == nil || len(d.Errors) != 0 {
			t.Errorf("bad name: done %+v", d)
		}
	})

	t.Run("CRLF and a lone CR end lines as LF", func(t *testing.T) {
		ev, d := execute("Cr.md", nil)
		var out, errs []string
		for _, e := range ev {
			if e.name == "stdout" {
				out = append(out, e.data)
			} else {
				errs = append(errs, e.data)
			}
		}
		if !slices.Equal(out, []string{"a\n", "b\n", "c\n"}) || !slices.Equal(errs, []string{"x\n", "y"}) {
			t.Errorf("events: stdout %q stderr %q", out, errs)
		}
		if d.Stdout != "a\nb\nc\n" || d.Stderr != "x\ny" {
			t.Errorf("done: %+v", d)
		}
	})
}
