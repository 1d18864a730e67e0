package testenv

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// NeedRootTools fails the test under CI=true, and skips it elsewhere,
// unless it runs as root and finds every one of tools (a name on PATH, or
// a path): the message is "<purpose> needs <what is missing> (<hint>)".
// CI must have everything; a developer's machine may lack it.
func NeedRootTools(t testing.TB, purpose, hint string, tools ...string) {
	t.Helper()
	var missing []string
	for _, bin := range tools {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if len(missing) > 0 {
		msg := purpose + " needs " + strings.Join(missing, ", ") + " (" + hint + ")"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// RerunInMountNamespace runs the test name of this test binary again in a
// private mount namespace (unshare -m), where the shell script setup first
// mounts what the test needs and then execs its last arguments: setup gets
// args, then the binary with the flags that run name alone. The inner run
// has innerEnv=1 in its environment, so the test knows to do its part
// there. The inner output is logged; the test fails unless it passed.
func RerunInMountNamespace(t *testing.T, setup string, args []string, name, innerEnv string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	argv := append([]string{"-m", "--propagation", "private", "sh", "-c", setup, "sh"}, args...)
	argv = append(argv, self, "-test.run", "^"+name+"$", "-test.v", "-test.count=1")
	cmd := exec.CommandContext(ctx, "unshare", argv...)
	cmd.Env = append(os.Environ(), innerEnv+"=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	t.Logf("inside the namespace:\n%s", out.String())
	if err != nil {
		t.Fatalf("%s inside the namespace failed: %v", name, err)
	}
	if !strings.Contains(out.String(), "--- PASS: "+name) {
		t.Fatalf("%s inside the namespace did not pass", name)
	}
}
