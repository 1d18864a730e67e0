package procfs

import (
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
)

func TestParseCountsFromTheLastParenthesis(t *testing.T) {
	line := "42 (a (b) c) S 7 42 42 0 -1 4194560 1 0 0 0 11 12 13 14 20 0 1 0 99 0 0\n"
	f := parse(line)
	if f == nil {
		t.Fatal("parse refused a well-formed line")
	}
	if f[0] != "S" || f[1] != "7" || f[11] != "11" || f[12] != "12" || f[13] != "13" || f[14] != "14" {
		t.Fatalf("fields = %q", f)
	}
	for _, bad := range []string{"", "42 no parenthesis S 7", "42 (x) S 7 8"} {
		if f := parse(bad); f != nil {
			t.Errorf("parse(%q) = %q, want nil", bad, f)
		}
	}
}

func TestFieldsAndChildrenOfARealProcess(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	f := Fields(cmd.Process.Pid)
	if f == nil {
		t.Fatal("no fields for a running child")
	}
	if f[1] != strconv.Itoa(os.Getpid()) {
		t.Fatalf("parent = %s, want %d", f[1], os.Getpid())
	}
	if !slices.Contains(Children(os.Getpid()), cmd.Process.Pid) {
		t.Fatalf("Children(%d) misses %d", os.Getpid(), cmd.Process.Pid)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if f := Fields(cmd.Process.Pid); f != nil {
		t.Fatalf("fields of a reaped process: %q", f)
	}
}
