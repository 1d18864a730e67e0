package executor

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// runInOwnProcess runs body in a run of the test binary of its own, for
// a test that sets what is the whole process's (the child subreaper
// flag), which the package's other tests must never run under: in that
// run (the variable env set) it calls body; otherwise it runs t's test
// there, alone, logs the run's output and fails t unless the run passed.
func runInOwnProcess(t *testing.T, env string, body func(t *testing.T)) {
	if os.Getenv(env) != "" {
		body(t)
		return
	}
	t.Parallel()
	name := t.Name()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run", "^"+name+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), env+"=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	t.Logf("the run of its own:\n%s", out.String())
	if err != nil || !strings.Contains(out.String(), "--- PASS: "+name) {
		t.Fatalf("the run of its own failed: %v", err)
	}
}
