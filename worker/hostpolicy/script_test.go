package hostpolicy

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
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
	// The executor runs the file itself (/bin/sh may link to dash), argv
	// keeps the name.
	real, err := filepath.EvalSymlinks(want)
	if err != nil {
		t.Fatal(err)
	}
	if prep.Req.Path != real || !slices.Equal(prep.Req.Argv, []string{want, filepath.Join(dir, scriptName)}) {
		t.Errorf("path %s, argv = %q, want the default interpreter %s (%s)", prep.Req.Path, prep.Req.Argv, want, real)
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

// TestPrepareScriptRunDirIsTheUsersOnlyWhenWritten: the run directory
// passes to the script's user only once the worker has written it. A
// process of that user (another order's escapee, a daemon running as
// nobody) that saw the directory appear in TMPDIR could otherwise plant
// a symlink where an input file's subdirectory goes, and the root worker
// would write the file through it, anywhere, and hand it to that user.
func TestPrepareScriptRunDirIsTheUsersOnlyWhenWritten(t *testing.T) {
	needRoot(t)
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("this host has no user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	base := t.TempDir()
	tmp := filepath.Join(base, "tmp")
	victim := filepath.Join(base, "victim")
	for _, d := range []string{tmp, victim} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A TMPDIR like /tmp, that nobody can list and enter.
	for d, mode := range map[string]os.FileMode{filepath.Dir(base): 0o755, base: 0o755, tmp: 0o1777} {
		if err := os.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("TMPDIR", tmp)

	// The other process of the script's user: it links "sub" in every run
	// directory it sees to the victim directory, as fast as it can.
	planter := exec.Command("perl", "-e", `my ($t, $v) = @ARGV; print "ready\n"; close STDOUT;
		while (1) { opendir(my $d, $t) or next; for my $e (readdir $d) { symlink($v, "$t/$e/sub") if $e =~ /^orderly-run-/ } closedir $d }`,
		tmp, victim)
	planter.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	out, err := planter.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := planter.Start(); err != nil {
		t.Fatalf("start perl as nobody: %v", err)
	}
	defer func() { _ = planter.Process.Kill(); _ = planter.Wait() }()
	if _, err := io.ReadAll(out); err != nil {
		t.Fatal(err)
	}

	cfg := config.Default().Worker
	cfg.AllowedUsers = []string{"nobody"}
	p, err := NewWithRunbooks(cfg, config.DefaultRunbooks())
	if err != nil {
		t.Fatal(err)
	}
	// Many files before the one in sub/: the time the planter has.
	var files []order.File
	for i := range 300 {
		files = append(files, order.File{Path: fmt.Sprintf("f%03d", i), Mode: 0o644, Data: []byte("x")})
	}
	files = append(files, order.File{Path: "sub/planted", Mode: 0o644, Data: []byte("from the runbook")})
	for range 5 {
		o := scriptOrder("echo\n", files...)
		o.RunAs = "nobody"
		prep, err := p.Prepare(o)
		if err == nil {
			if st, err := os.Stat(prep.Req.Dir); err != nil || st.Sys().(*syscall.Stat_t).Uid != uint32(uid) {
				t.Errorf("run directory %s is not nobody's: %v", prep.Req.Dir, err)
			}
			prep.Cleanup()
		}
		if _, err := os.Lstat(filepath.Join(victim, "planted")); err == nil {
			t.Fatalf("the worker wrote an input file through a symlink nobody planted in the run directory, into %s", victim)
		}
	}
}

// TestRemoveRunDirs: the run directories of one order, which a worker
// killed mid-run leaves, are removed by its id; another order's, which
// may be running, is left alone.
func TestRemoveRunDirs(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	p := newScriptPolicy(t, 1<<20)
	dead, live := scriptOrder("sleep 9\n"), scriptOrder("sleep 9\n")
	var deadDirs []string
	for range 2 { // an idempotent order requeued after a crash left one per attempt
		prep, err := p.Prepare(dead)
		assertCode(t, err, "")
		deadDirs = append(deadDirs, prep.Req.Dir)
	}
	prep, err := p.Prepare(live)
	assertCode(t, err, "")
	defer prep.Cleanup()
	removed, err := p.RemoveRunDirs(dead.ID)
	slices.Sort(removed)
	slices.Sort(deadDirs)
	if err != nil || !slices.Equal(removed, deadDirs) {
		t.Errorf("removed %q (%v), want %q", removed, err, deadDirs)
	}
	for _, d := range deadDirs {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s is left: %v", d, err)
		}
	}
	if _, err := os.Stat(filepath.Join(prep.Req.Dir, scriptName)); err != nil {
		t.Errorf("the other order's run directory was touched: %v", err)
	}
}
