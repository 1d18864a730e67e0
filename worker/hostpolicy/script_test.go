package hostpolicy

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
)

func newScriptPolicy(t *testing.T, maxBytes int64) *Policy {
	t.Helper()
	w := config.Default().Worker
	rb := config.DefaultRunbooks()
	rb.MaxInputBytes = maxBytes
	p, err := NewWithRunbooks(w, rb)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func scriptOrder(body string, files ...order.File) *order.Order {
	return &order.Order{ID: order.NewID(), Kind: order.KindScript, Command: "runbook:T.md", CaptureStdout: true,
		Env: map[string]string{"GREETING": "hi"}, Script: &order.Script{Runbook: "T.md", Body: []byte(body), Files: files}}
}

// TestPrepareScript: the run directory holds the input files and the
// script, private to the run, the interpreter is chosen by the rules, and
// Cleanup removes the directory.
func TestPrepareScript(t *testing.T) {
	p := newScriptPolicy(t, 1<<20)
	prep, err := p.Prepare(scriptOrder("echo hi\n",
		order.File{Path: "data/list.txt", Mode: 0o644, Data: []byte("a\n")},
		order.File{Path: "tool.sh", Mode: 0o755, Data: []byte("#!/bin/sh\n")}))
	assertCode(t, err, "")
	dir := prep.Req.Dir
	defer prep.Cleanup()
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("run dir %s: %v %v", dir, st.Mode(), err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "data/list.txt")); err != nil || string(b) != "a\n" {
		t.Fatalf("input file: %q %v", b, err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "tool.sh")); st.Mode().Perm()&0o100 == 0 {
		t.Errorf("tool.sh lost its exec bit: %v", st.Mode())
	}
	want := "/bin/sh"
	if _, err := os.Stat("/bin/zsh"); err == nil {
		want = "/bin/zsh"
	}
	if prep.Req.Path != want || !slices.Equal(prep.Req.Argv, []string{want, filepath.Join(dir, scriptName)}) {
		t.Errorf("argv = %q, want the default interpreter %s", prep.Req.Argv, want)
	}
	if !slices.Contains(prep.Req.Env, "GREETING=hi") || slices.ContainsFunc(prep.Req.Env, func(e string) bool {
		return strings.HasPrefix(e, "ORDERLY_") || strings.HasPrefix(e, "GOPATH=")
	}) {
		t.Errorf("env = %q", prep.Req.Env)
	}
	prep.Cleanup()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("Cleanup left %s: %v", dir, err)
	}
}

// TestPrepareScriptExecDir: RUNBOOK_EXEC_DIR_HOST names the run
// directory (stage0's host path of it), whatever the order carries.
func TestPrepareScriptExecDir(t *testing.T) {
	p := newScriptPolicy(t, 1<<20)
	o := scriptOrder("echo hi\n")
	o.Env["RUNBOOK_EXEC_DIR_HOST"] = "/elsewhere"
	prep, err := p.Prepare(o)
	assertCode(t, err, "")
	defer prep.Cleanup()
	var got []string
	for _, e := range prep.Req.Env {
		if strings.HasPrefix(e, "RUNBOOK_EXEC_DIR_HOST=") {
			got = append(got, e)
		}
	}
	if want := "RUNBOOK_EXEC_DIR_HOST=" + prep.Req.Dir; len(got) != 1 || got[0] != want {
		t.Errorf("env has %q, want only %q", got, want)
	}
}

func TestPrepareScriptRefusals(t *testing.T) {
	p := newScriptPolicy(t, 64)
	cases := []struct {
		name string
		o    *order.Order
		code order.Code
		msg  string
	}{
		{"no script", &order.Order{Kind: order.KindScript}, order.CodeUnprocessable, "carries no script"},
		{"too large", scriptOrder(strings.Repeat("x", 65)), order.CodeTooLarge, "max_input_bytes"},
		{"escaping file", scriptOrder("echo\n", order.File{Path: "../x"}), order.CodeInvalid, "not a plain relative path"},
		{"absolute file", scriptOrder("echo\n", order.File{Path: "/etc/x"}), order.CodeInvalid, "not a plain relative path"},
		{"file named like the script", scriptOrder("echo\n", order.File{Path: scriptName}), order.CodeInvalid, ""},
		{"interpreter not allowed", scriptOrder("#!/usr/bin/python3\nprint(1)\n"), order.CodeForbidden, "runbooks.interpreters"},
		{"env interpreter not allowed", scriptOrder("#!/usr/bin/env bash\necho\n"), order.CodeForbidden, "/usr/bin/env"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := p.Prepare(c.o)
			assertCode(t, err, c.code, c.msg)
		})
	}
	o := scriptOrder("echo\n")
	o.Env["ZDOTDIR"] = "/tmp/evil"
	_, err := p.Prepare(o)
	assertCode(t, err, order.CodeForbidden, "ZDOTDIR")
	o = scriptOrder("echo\n")
	o.Env["BASH_ENV"] = "/tmp/evil"
	_, err = p.Prepare(o)
	assertCode(t, err, order.CodeForbidden, "BASH_ENV")
}

// TestPrepareScriptFailureLeavesNoRunDir: a run directory that could not
// be written in full is removed. The cleanup removed the named result,
// which every failing return had set to "", so each failure (a full
// disk, in the probe) left a directory behind, holding what was written.
func TestPrepareScriptFailureLeavesNoRunDir(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	p := newScriptPolicy(t, 1<<20)
	// "a" is written as a file, so "a/b" cannot be.
	_, err := p.Prepare(scriptOrder("echo\n",
		order.File{Path: "a", Mode: 0o644, Data: []byte("x")},
		order.File{Path: "a/b", Mode: 0o644, Data: []byte("y")}))
	assertCode(t, err, order.CodeUnavailable, "run directory")
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Fatalf("a failed run left %s behind in %s", left[0].Name(), tmp)
	}
}

func TestPrepareScriptShebang(t *testing.T) {
	p := newScriptPolicy(t, 1<<20)
	prep, err := p.Prepare(scriptOrder("#!/bin/sh -e\necho hi\n"))
	assertCode(t, err, "")
	defer prep.Cleanup()
	if !slices.Equal(prep.Req.Argv[:2], []string{"/bin/sh", "-e"}) {
		t.Fatalf("argv = %q", prep.Req.Argv)
	}
}
