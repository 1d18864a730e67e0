package main

import (
	"os"
	"os/exec"
	"testing"
)

// copyTool copies the program name found on PATH to dst, executable, so a
// test can give a command path that holds only the tools it means to allow.
func copyTool(t *testing.T, name, dst string) {
	t.Helper()
	src, err := exec.LookPath(name)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}
