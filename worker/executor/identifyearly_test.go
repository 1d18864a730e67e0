package executor

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestLeaderIdentifiedWhileItRuns: the leader's /proc/<pid>/stat (its
// identity for the process record) is read right after its start,
// before Request.Started and so before Run waits for its exit, not once
// its exit is heard: for a command of a millisecond that read was on the
// worker's serial path from the exit to the result's write. The identity
// handed to OnStart is the leader's all the same, and the exit is heard
// first (exited).
func TestLeaderIdentifiedWhileItRuns(t *testing.T) {
	e := New(nil)
	req := baseRequest("/bin/true")
	req.ExitWait = time.Minute // heard, not waited out
	var (
		started    bool
		beforeThat []string // the /proc stat files read before Started
		got        Process
		exited     bool
	)
	procFileOpened = func(p string) {
		if !started && strings.HasSuffix(p, "/stat") {
			beforeThat = append(beforeThat, p)
		}
	}
	defer func() { procFileOpened = nil }()
	req.Started = func() { started = true }
	req.OnStart = func(p Process, ex bool) error {
		got, exited = p, ex
		return nil
	}
	res := e.Run(t.Context(), req, nil)
	if res.ExitCode == nil || *res.ExitCode != 0 || res.Aborted != nil {
		t.Fatalf("result %+v", res)
	}
	if !started || !exited || got.PID != res.Pid || got.PGID != res.Pid || got.StartTime == 0 {
		t.Fatalf("Started called %v; OnStart got %+v, exited %v; want the leader %d with its start time, exited", started, got, exited, res.Pid)
	}
	if stat := "/proc/" + strconv.Itoa(res.Pid) + "/stat"; !slices.Contains(beforeThat, stat) {
		t.Fatalf("stat files read before Started: %v; want the leader's %s among them (identified while it runs)", beforeThat, stat)
	}
}
