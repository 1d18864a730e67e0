package runbook

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fence keeps the samples readable: ``` cannot appear in a Go raw string.
func md(s string) []byte { return []byte(strings.ReplaceAll(s, "~~~", "```")) }

// rotateLogs is a complete runbook in the layout, with every section.
const rotateLogs = `# RotateLogs
Rotates the application logs and reports what it kept.

# Environment Requirements
~~~yaml
KEEP_DAYS: How many days of logs to keep
LOG_TAG: A tag for the report
~~~

# File System Requirements
~~~yaml
Input:
  - ./data/patterns.txt
  - conf
~~~

# Required Claims
~~~yaml
roles: ops, admin
team: [storage]
~~~

# Script
~~~sh
# a comment that looks like a heading but sits in the fence
echo "keeping $KEEP_DAYS days"
cat patterns.txt
~~~

# History
`

func TestParseComplete(t *testing.T) {
	rb := Parse("RotateLogs.md", md(rotateLogs))
	if !rb.Valid() || len(rb.Warnings) != 0 {
		t.Fatalf("problems %v warnings %v", rb.Problems, rb.Warnings)
	}
	if rb.Name != "RotateLogs" || len(rb.SHA256) != 64 {
		t.Fatalf("name %q sha %q", rb.Name, rb.SHA256)
	}
	wantEnv := []EnvVar{{"KEEP_DAYS", "How many days of logs to keep"}, {"LOG_TAG", "A tag for the report"}}
	if !slices.Equal(rb.Env, wantEnv) {
		t.Fatalf("env = %v", rb.Env)
	}
	if !slices.Equal(rb.Inputs, []string{"./data/patterns.txt", "conf"}) {
		t.Fatalf("inputs = %v", rb.Inputs)
	}
	if len(rb.Claims) != 2 || !slices.Equal(rb.Claims[0].Allowed, []string{"ops", "admin"}) ||
		!slices.Equal(rb.Claims[1].Allowed, []string{"storage"}) {
		t.Fatalf("claims = %+v", rb.Claims)
	}
	if !strings.HasPrefix(rb.Script, "# a comment") || !strings.HasSuffix(rb.Script, "cat patterns.txt\n") {
		t.Fatalf("script = %q", rb.Script)
	}
}

// inputs is a runbook whose File System Requirements list paths.
func inputs(paths ...string) string {
	list := ""
	for _, p := range paths {
		list += "  - '" + p + "'\n"
	}
	return "# M\n# Environment Requirements\n~~~yaml\n{}\n~~~\n# File System Requirements\n~~~yaml\nInput:\n" + list +
		"~~~\n# Script\n~~~sh\necho hi\n~~~\n# History\n"
}

// TestParseProblems lists every problem the parser finds, each on the
// smallest runbook that has it.
func TestParseProblems(t *testing.T) {
	const (
		env     = "# Environment Requirements\n~~~yaml\n{}\n~~~\n"
		files   = "# File System Requirements\n~~~yaml\nInput: []\n~~~\n"
		script  = "# Script\n~~~sh\necho hi\n~~~\n"
		history = "# History\n"
	)
	cases := []struct {
		name, file, text string
		code             Code
		msg              string
	}{
		{"empty", "E.md", "  \n\n", CodeEmpty, "Runbook content is empty"},
		{"no title", "N.md", "Some text\n" + env + files + script + history, CodeNoTitle, "Runbook must start with a '# <name>' line"},
		{"missing env", "M.md", "# M\n" + files + script + history, CodeMissingSection, "Missing required section: Environment Requirements"},
		{"missing files", "M.md", "# M\n" + env + script + history, CodeMissingSection, "Missing required section: File System Requirements"},
		{"missing script", "M.md", "# M\n" + env + files + history, CodeMissingSection, "Missing required section: Script"},
		{"missing history", "M.md", "# M\n" + env + files + script, CodeMissingSection, "Missing required section: History"},
		{"empty env", "M.md", "# M\n# Environment Requirements\n\n" + files + script + history, CodeEmptySection, "Section 'Environment Requirements' is empty"},
		{"empty script", "M.md", "# M\n" + env + files + "# Script\n   \n" + history, CodeEmptySection, "Section 'Script' is empty"},
		{"env without yaml", "M.md", "# M\n# Environment Requirements\nFOO: bar\n" + files + script + history, CodeEnvNoYAML, "Environment Requirements section must contain a YAML code block"},
		{"files without yaml", "M.md", "# M\n" + env + "# File System Requirements\nInput: []\n" + script + history, CodeFilesNoYAML, "File System Requirements section must contain a YAML code block"},
		{"claims without yaml", "M.md", "# M\n" + env + files + "# Required Claims\nroles: ops\n" + script + history, CodeClaimsNoYAML, "Required Claims section must contain a YAML code block"},
		{"script not sh", "M.md", "# M\n" + env + files + "# Script\n~~~bash\necho hi\n~~~\n" + history, CodeNoScript, "Script section must contain a sh code block"},
		{"empty sh block", "M.md", "# M\n" + env + files + "# Script\n~~~sh\n~~~\n" + history, CodeNoScript, "Script section must contain a sh code block"},
		{"blank sh block", "M.md", "# M\n" + env + files + "# Script\n~~~sh\n  \n\n~~~\n" + history, CodeNoScript, ""},
		{"invalid yaml", "M.md", "# M\n# Environment Requirements\n~~~yaml\nFOO: [unclosed\n~~~\n" + files + script + history, CodeInvalidYAML, ""},
		{"env yaml a list", "M.md", "# M\n# Environment Requirements\n~~~yaml\n- FOO\n~~~\n" + files + script + history, CodeInvalidYAML, "Environment Requirements section YAML must be a mapping"},
		{"input not a list", "M.md", "# M\n" + env + "# File System Requirements\n~~~yaml\nInput: one.txt\n~~~\n" + script + history, CodeInvalidYAML, "File System Requirements section: Input must be a list of paths"},
		{"env key twice", "M.md", "# M\n# Environment Requirements\n~~~yaml\nA: first\nB: bee\nA: second\n~~~\n" + files + script + history, CodeInvalidYAML,
			`Environment Requirements section has invalid YAML: key "A" is defined twice`},
		{"claim twice", "M.md", "# M\n" + env + files + "# Required Claims\n~~~yaml\nroles: ops\nroles: admin\n~~~\n" + script + history, CodeInvalidYAML,
			`Required Claims section has invalid YAML: key "roles" is defined twice`},
		{"claims twice", "M.md", "# M\n" + env + files + "# Required Claims\n~~~yaml\nteam: storage\n~~~\n" + script +
			"# Required Claims\n~~~yaml\nroles: admin\n~~~\n" + history, CodeDupSection, "Section 'Required Claims' appears more than once"},
		{"script twice", "M.md", "# M\n" + env + files + script + "# Script\n~~~sh\necho second\n~~~\n" + history, CodeDupSection,
			"Section 'Script' appears more than once"},
		{"bad env name", "M.md", "# M\n# Environment Requirements\n~~~yaml\nBAD-NAME: x\n~~~\n" + files + script + history, CodeBadEnvName, "Invalid environment variable name: BAD-NAME"},
		{"input escapes", "M.md", "# M\n" + env + "# File System Requirements\n~~~yaml\nInput:\n  - ../secret\n~~~\n" + script + history, CodeInputEscapes, "Input path escapes runbook directory: ../secret"},
		{"input absolute", "M.md", "# M\n" + env + "# File System Requirements\n~~~yaml\nInput:\n  - /etc/passwd\n~~~\n" + script + history, CodeInputEscapes, "Input path escapes runbook directory: /etc/passwd"},
		{"input is the runbook directory", "M.md", inputs(".", "a.txt"), CodeInputInvalid, "Input path cannot be copied into the run directory: . (it names the runbook directory itself)"},
		{"input cleans to the runbook directory", "M.md", inputs("conf/.."), CodeInputInvalid, ""},
		{"input lands on the script", "M.md", inputs("evil/.orderly-script"), CodeInputInvalid, "Input path cannot be copied into the run directory: evil/.orderly-script (the run's script is written to .orderly-script)"},
		{"input with a backslash", "M.md", inputs(`conf/a\b.conf`), CodeInputInvalid, ""},
		{"two inputs land on one name", "M.md", inputs("conf/a.conf", "other/a.conf"), CodeInputClash, "Two inputs land on a.conf in the run directory: conf/a.conf, other/a.conf"},
		{"a file and a directory land on one name", "M.md", inputs("conf", "old/conf/"), CodeInputClash, ""},
		{"backticks inside the script", "M.md", "# M\n" + env + files + "# Script\n~~~sh\necho '~~~'\n~~~\n" + history, CodeScriptFence, ""},
		{"fence line inside the script", "M.md", "# M\n" + env + files + "# Script\n~~~sh\necho a\n~~~\necho b\n~~~\n~~~\n" + history, CodeScriptFence, ""},
		{"empty #! line", "M.md", "# M\n" + env + files + "# Script\n~~~sh\n#!\necho a\n~~~\n" + history, CodeBadShebang,
			`The script's #! line must name its interpreter by a clean absolute path, not ""`},
		{"relative #! interpreter", "M.md", "# M\n" + env + files + "# Script\n~~~sh\n#! bash -e\necho a\n~~~\n" + history, CodeBadShebang,
			`The script's #! line must name its interpreter by a clean absolute path, not "bash"`},
		{"unclean #! interpreter", "M.md", "# M\n" + env + files + "# Script\n~~~sh\n#!/usr/bin/../bin/bash\necho a\n~~~\n" + history, CodeBadShebang, ""},
		{"unclosed fence", "M.md", "# M\n" + env + files + "# Script\n~~~sh\necho a\n" + history, CodeUnclosedFence, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rb := Parse(c.file, md(c.text))
			i := slices.IndexFunc(rb.Problems, func(p Problem) bool { return p.Code == c.code })
			if i < 0 {
				t.Fatalf("no %s among %+v", c.code, rb.Problems)
			}
			if c.msg != "" && rb.Problems[i].Message != c.msg {
				t.Fatalf("message = %q, want %q", rb.Problems[i].Message, c.msg)
			}
			if rb.Valid() {
				t.Fatal("Valid() with problems")
			}
		})
	}
}

// TestParseFreeTextTwice: only the sections the parser reads may not be
// repeated; other H1 lines are free text.
func TestParseFreeTextTwice(t *testing.T) {
	text := strings.Replace(rotateLogs, "# Script\n", "# Notes\nOne.\n\n# Notes\nTwo.\n\n# Script\n", 1)
	if rb := Parse("RotateLogs.md", md(text)); !rb.Valid() {
		t.Fatalf("problems %v", rb.Problems)
	}
}

// TestParseShebangs: a #! line a worker could run (stage0's samples
// write "#! /bin/zsh") is no problem; which interpreters a host lists is
// the worker's to judge.
func TestParseShebangs(t *testing.T) {
	for _, line := range []string{"#! /bin/zsh", "#!/bin/bash", "#!/bin/sh -e", "#!/usr/bin/env bash"} {
		text := strings.Replace(rotateLogs, "# a comment", line+"\n# a comment", 1)
		if rb := Parse("RotateLogs.md", md(text)); !rb.Valid() {
			t.Errorf("%q: problems %v", line, rb.Problems)
		}
	}
}

func TestParseNameWarning(t *testing.T) {
	text := strings.Replace(rotateLogs, "# RotateLogs", "# Rotate", 1)
	rb := Parse("RotateLogs.md", md(text))
	if !rb.Valid() || !slices.Equal(rb.Warnings, []string{"Runbook name 'Rotate' does not match filename 'RotateLogs'"}) {
		t.Fatalf("problems %v warnings %v", rb.Problems, rb.Warnings)
	}
}

func TestParseCRLF(t *testing.T) {
	rb := Parse("RotateLogs.md", []byte(strings.ReplaceAll(string(md(rotateLogs)), "\n", "\r\n")))
	if !rb.Valid() || len(rb.Env) != 2 {
		t.Fatalf("problems %v env %v", rb.Problems, rb.Env)
	}
}

func TestJudge(t *testing.T) {
	rb := Parse("RotateLogs.md", md(rotateLogs))
	missing := func(in string) error {
		if in == "conf" {
			return errInputMissing
		}
		return nil
	}
	got := Messages(rb.Judge(map[string]string{"KEEP_DAYS": ""}, missing))
	want := []string{"Required environment variable not set: LOG_TAG", "Required input file does not exist: conf"}
	if !slices.Equal(got, want) {
		t.Fatalf("problems = %q, want %q", got, want)
	}
}

func TestCheckClaims(t *testing.T) {
	rb := Parse("RotateLogs.md", md(rotateLogs))
	cases := []struct {
		name string
		have map[string][]string
		want string
	}{
		{"all satisfied", map[string][]string{"roles": {"dev", "admin"}, "team": {"storage"}}, ""},
		{"one absent", map[string][]string{"roles": {"ops"}},
			"RBAC check failed for execute. Missing or invalid claims: team (not present)"},
		{"wrong values", map[string][]string{"roles": {"dev", "qa"}, "team": {"web"}},
			"RBAC check failed for execute. Missing or invalid claims: roles=dev, qa (required: ops, admin), team=web (required: storage)"},
	}
	for _, c := range cases {
		if got := rb.CheckClaims(OpExecute, c.have); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

func TestSanitize(t *testing.T) {
	in := map[string]json.RawMessage{
		"S": json.RawMessage(`"a\u0001b\tc\nd\u007f"`), "N": json.RawMessage(`12.50`),
		"C1": json.RawMessage(`"x\u0085y\u0080\u009fz\r\u00a0é"`), // C1 controls go; NBSP and é stay
		"Z":  json.RawMessage(`null`), "B": json.RawMessage(`true`),
	}
	got, err := Sanitize(in)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"S": "ab\tc\nd", "N": "12.50", "Z": "", "B": "True", "C1": "xyz\r\u00a0é"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if _, err := Sanitize(map[string]json.RawMessage{"1BAD": json.RawMessage(`"x"`)}); err == nil ||
		err.Error() != "Invalid environment variable name: 1BAD" {
		t.Fatalf("bad name: %v", err)
	}
	if _, err := Sanitize(map[string]json.RawMessage{"O": json.RawMessage(`{"a":1}`)}); err == nil {
		t.Fatal("an object value was accepted")
	}
	// Several bad entries: the same one is reported every time.
	bad := map[string]json.RawMessage{"e-f": json.RawMessage(`"3"`), "c-d": json.RawMessage(`"2"`),
		"L": json.RawMessage(`[1]`), "a-b": json.RawMessage(`"1"`), "G": json.RawMessage(`{}`)}
	for range 20 {
		if _, err := Sanitize(bad); err == nil || err.Error() != "environment variable G: the value must be a string, number, boolean or null" {
			t.Fatalf("several bad entries: %v, want the first by name (G)", err)
		}
	}
}

func TestSource(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), md(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("RotateLogs.md", rotateLogs)
	write("data/patterns.txt", "*.log\n")
	write("conf/a.conf", "a\n")
	write("conf/sub/b.conf", "b\n")
	write("notes.txt", "not a runbook")
	// Names no order can carry as its command (runbook:<file>), nor
	// PostgreSQL store: not runbooks.
	write("in\xffvalid.md", rotateLogs)
	write("line\nbreak.md", rotateLogs)
	write("del\x7f.md", rotateLogs)
	if err := os.WriteFile(filepath.Join(outside, "Secret.md"), []byte("# Secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "Secret.md"), filepath.Join(dir, "Link.md")); err != nil {
		t.Fatal(err)
	}
	src, err := NewSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	list, err := src.List()
	if err != nil || len(list) != 1 || list[0].File != "RotateLogs.md" {
		t.Fatalf("list = %v, %v", list, err)
	}
	for _, bad := range []string{"../RotateLogs.md", "Link.md", "notes.txt", "data/patterns.txt", ".md", "Missing.md",
		"in\xffvalid.md", "line\nbreak.md", "del\x7f.md"} {
		if _, err := src.Load(bad); err != ErrNotFound {
			t.Errorf("Load(%q) = %v, want ErrNotFound", bad, err)
		}
	}
	a, _ := src.Load("RotateLogs.md")
	b, _ := src.Load("RotateLogs.md")
	if a != b {
		t.Fatal("the same file version was parsed twice")
	}
	files, problems := src.Inputs(a, 1<<20)
	if problems != nil {
		t.Fatal(problems)
	}
	var paths []string
	for _, f := range files {
		paths = append(paths, f.Path)
	}
	slices.Sort(paths)
	if !slices.Equal(paths, []string{"conf/a.conf", "conf/sub/b.conf", "patterns.txt"}) {
		t.Fatalf("inputs = %v", paths)
	}
	// The cap counts the script, the paths and the data, as an order does.
	size := len(a.Script) + len("patterns.txt*.log\n") + len("conf/a.confa\n") + len("conf/sub/b.confb\n")
	if p := src.Check(a, map[string]string{"KEEP_DAYS": "", "LOG_TAG": ""}, int64(size)); p != nil {
		t.Fatalf("at the cap: %v", p)
	}
	for _, over := range []int64{int64(size - 1), 3} {
		if p := src.CheckInputs(a, over); len(p) != 1 || p[0].Code != CodeInputsTooLarge {
			t.Fatalf("CheckInputs over the cap (%d) = %v", over, p)
		}
		if f, p := src.Inputs(a, over); f != nil || len(p) != 1 || p[0].Code != CodeInputsTooLarge {
			t.Fatalf("inputs over the cap (%d) were read: %v", over, p)
		}
	}
	// An edit is picked up at once, even one that keeps size and mtime.
	st, _ := os.Stat(filepath.Join(dir, "RotateLogs.md"))
	edited := strings.Replace(rotateLogs, "RotateLogs\n", "RotateLogz\n", 1)
	write("RotateLogs.md", edited)
	if err := os.Chtimes(filepath.Join(dir, "RotateLogs.md"), time.Now(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	c, _ := src.Load("RotateLogs.md")
	if c == a || c.Name != "RotateLogz" {
		t.Fatalf("edit not picked up: %q", c.Name)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "conf", "escape")); err != nil {
		t.Fatal(err)
	}
	if err := src.Exists("conf/escape/Secret.md"); !errors.Is(err, errInputEscapes) {
		t.Fatalf("Exists through a symlink out = %v", err)
	}
	// The symlink out sits in the tree of the input conf: validate finds
	// it as execute does, with the same code.
	want := []Problem{{CodeInputEscapes, "Input path escapes runbook directory: conf/escape"}}
	if p := src.CheckInputs(c, 1<<20); !slices.Equal(p, want) {
		t.Fatalf("CheckInputs = %v, want %v", p, want)
	}
	if f, p := src.Inputs(c, 1<<20); f != nil || !slices.Equal(p, want) {
		t.Fatalf("Inputs = %v, want %v", p, want)
	}
}

// TestSourceInputProblems: each input a run could not copy is a problem
// with a code for the checks validate runs (CheckInputs, Exists) and for
// Inputs, which execute reads.
func TestSourceInputProblems(t *testing.T) {
	dir := t.TempDir()
	for p, text := range map[string]string{"ok.txt": "ok", "tree/a.txt": "a", `slash/a\b.txt`: "x", "locked.txt": "x", "tree2/locked.txt": "x"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("nowhere", filepath.Join(dir, "tree", "dangling")); err != nil {
		t.Fatal(err)
	}
	src, err := NewSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	type inputCase struct {
		input string
		want  Problem
	}
	cases := []inputCase{
		{"missing.txt", Problem{CodeInputMissing, "Required input file does not exist: missing.txt"}},
		{"fifo", Problem{CodeInputInvalid, "Input path cannot be copied into the run directory: fifo (not a regular file or a directory)"}},
		{"slash", Problem{CodeInputInvalid, `Input path cannot be copied into the run directory: slash/a\b.txt (a run directory cannot hold a name with a backslash)`}},
		{".", Problem{CodeInputInvalid, "Input path cannot be copied into the run directory: . (it names the runbook directory itself)"}},
	}
	if os.Geteuid() != 0 { // root reads any file
		for _, p := range []string{"locked.txt", "tree2/locked.txt"} {
			if err := os.Chmod(filepath.Join(dir, p), 0); err != nil {
				t.Fatal(err)
			}
		}
		cases = append(cases,
			inputCase{"locked.txt", Problem{CodeInputUnread, "Input file cannot be read: locked.txt"}},
			inputCase{"tree2", Problem{CodeInputUnread, "Input file cannot be read: tree2/locked.txt"}})
	}
	for _, c := range cases {
		t.Run(c.input, func(t *testing.T) {
			rb := &Runbook{Script: "echo\n", Inputs: []string{"ok.txt", c.input, "tree"}}
			want := []Problem{c.want}
			if p := src.CheckInputs(rb, 1<<20); !slices.Equal(p, want) {
				t.Errorf("CheckInputs = %v, want %v", p, want)
			}
			if got := inputProblem(c.input, src.Exists(c.input)); got != c.want {
				t.Errorf("Exists: %v, want %v", got, c.want)
			}
			if f, p := src.Inputs(rb, 1<<20); f != nil || !slices.Equal(p, want) {
				t.Errorf("Inputs = %v, want %v", p, want)
			}
		})
	}
	// A dangling symlink in a tree is nothing to copy, not a problem.
	rb := &Runbook{Script: "echo\n", Inputs: []string{"ok.txt", "tree"}}
	if f, p := src.Inputs(rb, 1<<20); len(f) != 2 || p != nil {
		t.Fatalf("Inputs = %v, %v", f, p)
	}
}
