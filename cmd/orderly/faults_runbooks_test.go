package main

// Runbooks under faults (hG10): a runbook run is an order whose script runs
// several steps, and a step may be a sub-runbook on another host. These
// tests kill, freeze and restart the processes around one such run and
// check from outside (the steps' marker file, PostgreSQL's rows, /proc,
// the run directories, the client's answers) that no step runs twice, none
// runs after the run was ended, the recorded state matches what ran, no
// process or run directory is left behind, and the host runs the next one.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/postgres"
)

// stepsScript runs $STEPS steps of $STEP_SECONDS each; each writes
// "S <tag> <n>" to $MARKER as it starts and "E <tag> <n>" as it ends.
// STEP_SECONDS carries the test's nonce, so that the steps' sleeps are
// found in /proc by their argument. $SUB_HOST, when set, names the host
// of one more step run between the first and the second: the Child
// runbook, waited for. $GATE, when set, is a file the first step waits
// for before it ends: the test's fault is over by then.
const stepsScript = `i=1
while [ "$i" -le "$STEPS" ]; do
  echo "S $TAG $i" >> "$MARKER"
  sleep "$STEP_SECONDS"
  if [ "$i" = 1 ] && [ -n "$GATE" ]; then
    while [ ! -e "$GATE" ]; do sleep 0.1; done
  fi
  echo "E $TAG $i" >> "$MARKER"
  if [ "$i" = 1 ] && [ -n "$SUB_HOST" ]; then
    code=$(curl -sS -o sub.json -w '%{http_code}' -X POST "$RUNBOOK_URL/Child.md/execute?wait=60" \
      -H "$RUNBOOK_H_AUTH" -H "$RUNBOOK_H_CTYPE" \
      -d "{\"host\":\"$SUB_HOST\",\"env_vars\":{\"MARKER\":\"$MARKER\",\"TAG\":\"$TAG\"}}")
    echo "sub $code $(cat sub.json)"
    grep -q '"status":"succeeded"' sub.json || exit 3
  fi
  i=$((i+1))
done
`

// childScript is the sub-runbook: one step of its own.
const childScript = `echo "S $TAG child" >> "$MARKER"
echo "E $TAG child" >> "$MARKER"
`

// rbFaults is a fault stack serving the Steps and Child runbooks, with
// workers whose run directories go to tmp (TMPDIR), where the test can
// see what a run left behind.
type rbFaults struct {
	*faultStack
	tmp    string
	marker string
	nonce  string
	client *http.Client
}

func newRBFaults(t *testing.T) *rbFaults {
	t.Helper()
	rbDir := t.TempDir()
	for name, text := range map[string]string{
		"Steps.md": runbookDoc("Steps", "STEPS: how many steps\nSTEP_SECONDS: how long each\nMARKER: marker file\nTAG: the run's tag",
			"  []", "", stepsScript),
		"Child.md": runbookDoc("Child", "MARKER: marker file\nTAG: the run's tag", "  []", "", childScript),
	} {
		if err := os.WriteFile(filepath.Join(rbDir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := newFaultStackConf(t, func(conf string) string {
		return conf + fmt.Sprintf("runbooks:\n  dir: %q\n  host: h1\n", rbDir)
	})
	r := &rbFaults{faultStack: s, tmp: filepath.Join(s.dir, "tmp"), marker: filepath.Join(s.dir, "marker-rb"),
		nonce: fmt.Sprintf("%09d", rand.IntN(1e9)), client: &http.Client{Timeout: 90 * time.Second}}
	if err := os.Mkdir(r.tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killProcs(r.stepArg()) })
	return r
}

// worker starts a worker of host whose run directories go to r.tmp.
func (r *rbFaults) worker(host string) *faultWorker {
	r.t.Helper()
	return r.startWorkerEnv(host, "TMPDIR="+r.tmp)
}

// stepArg is the steps' sleep argument: about 1.5 s, unique to the test.
func (r *rbFaults) stepArg() string { return "1.5" + r.nonce }

// keyedAnswer is the client's record of one execute.
type keyedAnswer struct {
	code     int
	id       uuid.UUID
	status   string
	replayed bool
	body     string
}

// postKeyed POSTs body to url with the token and, when key is not empty,
// an Idempotency-Key, and reads the answer's order; a request that got no
// answer has only its error in body.
func postKeyed(t testing.TB, client *http.Client, url, token, key string, body []byte) keyedAnswer {
	t.Helper()
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := client.Do(req)
	if err != nil {
		return keyedAnswer{body: err.Error()}
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	a := keyedAnswer{code: resp.StatusCode, body: string(b), replayed: resp.Header.Get("Idempotent-Replayed") == "true"}
	var o api.Order
	if json.Unmarshal(b, &o) == nil {
		a.id, a.status = o.ID, string(o.Status)
	}
	return a
}

// execute runs Steps.md with steps steps on host (sub: the host of a
// sub-runbook step, "" for none), with key as its Idempotency-Key ("" for
// none) and wait as ?wait= ("" for none).
func (r *rbFaults) execute(tag, host string, steps int, sub, key, wait string) keyedAnswer {
	r.t.Helper()
	return r.executeEnv(tag, host, steps, sub, key, wait, nil)
}

// executeEnv is execute with more env_vars.
func (r *rbFaults) executeEnv(tag, host string, steps int, sub, key, wait string, more map[string]string) keyedAnswer {
	r.t.Helper()
	env := map[string]string{"STEPS": fmt.Sprint(steps), "STEP_SECONDS": r.stepArg(), "MARKER": r.marker, "TAG": tag, "SUB_HOST": sub}
	maps.Copy(env, more)
	body, _ := json.Marshal(map[string]any{"host": host, "timeout_seconds": 120, "env_vars": env})
	url := r.apiURL + "/v1/runbooks/Steps.md/execute"
	if wait != "" {
		url += "?wait=" + wait
	}
	return postKeyed(r.t, r.client, url, r.token, key, body)
}

// mustRun is execute that fails the test unless the run was accepted.
func (r *rbFaults) mustRun(tag, host string, steps int, sub, key, wait string) keyedAnswer {
	r.t.Helper()
	a := r.execute(tag, host, steps, sub, key, wait)
	if (a.code != http.StatusAccepted && a.code != http.StatusOK) || a.id == uuid.Nil {
		r.t.Fatalf("execute %s: %d %s", tag, a.code, a.body)
	}
	return a
}

// lines returns the marker's lines of tag (without the tag).
func (r *rbFaults) lines(tag string) []string {
	b, _ := os.ReadFile(r.marker)
	var out []string
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 3 && f[1] == tag {
			out = append(out, f[0]+" "+f[2])
		}
	}
	return out
}

// waitLine waits until the marker holds line ("S 2") for tag.
func (r *rbFaults) waitLine(tag, line string, d time.Duration) {
	r.t.Helper()
	waitUntil(r.t, d, tag+": "+line, func() bool { return slices.Contains(r.lines(tag), line) })
}

// row is what PostgreSQL holds of an order.
type rbRow struct {
	status, error, stdout string
	exit                  *int
	attempts              int
}

func (r *rbFaults) row(id uuid.UUID) rbRow {
	r.t.Helper()
	o, err := r.readRow(id)
	if err != nil {
		r.t.Fatalf("order %s: %v", id, err)
	}
	return o
}

func (r *rbFaults) readRow(id uuid.UUID) (rbRow, error) {
	var o rbRow
	var errText, stdout *string
	if err := r.pool.QueryRow(r.t.Context(), `SELECT status, error, convert_from(coalesce(stdout, ''), 'UTF8'), exit_code,
attempt
		FROM orders WHERE id = $1`, id).Scan(&o.status, &errText, &stdout, &o.exit, &o.attempts); err != nil {
		return o, err
	}
	if errText != nil {
		o.error = *errText
	}
	if stdout != nil {
		o.stdout = *stdout
	}
	return o, nil
}

// waitEnded waits until order id is no longer queued or running and
// returns its row. A read that fails is asked again: the test's own
// connections break when a scenario restarts PostgreSQL.
func (r *rbFaults) waitEnded(id uuid.UUID, d time.Duration) rbRow {
	r.t.Helper()
	var o rbRow
	var last error
	waitUntil(r.t, d, "order "+id.String()+" ends", func() bool {
		var err error
		if o, err = r.readRow(id); err != nil {
			if last == nil || last.Error() != err.Error() {
				r.t.Logf("read order %s (asked again): %v", id, err)
			}
			last = err
			return false
		}
		return o.status != "queued" && o.status != "running"
	})
	return o
}

// leftovers lists what runs left behind: the steps' processes still
// alive and the run directories in r.tmp.
func (r *rbFaults) leftovers() (procs []int, dirs []string) {
	dirs, _ = filepath.Glob(filepath.Join(r.tmp, "orderly-run-*"))
	return procsWithArgs("sleep", r.stepArg()), dirs
}

// checkClean fails the test when a step's process or a run directory is
// left, once the runs have ended (the directory is removed before the
// result is recorded; a crash's is removed by the host's next worker
// before it runs anything).
func (r *rbFaults) checkClean() {
	r.t.Helper()
	procs, dirs := r.leftovers()
	for _, p := range procs {
		r.t.Errorf("a step's process is left behind: pid %d %q (parent %d)", p, procArgs(p), parentPid(p))
	}
	for _, d := range dirs {
		r.t.Errorf("a run directory is left behind: %s", d)
	}
}

// checkSteps fails the test unless tag's marker lines are exactly want.
func (r *rbFaults) checkSteps(tag string, want ...string) {
	r.t.Helper()
	if got := r.lines(tag); !slices.Equal(got, want) {
		r.t.Errorf("%s: steps %q, want %q", tag, got, want)
	}
}

// nextRuns checks that host runs a runbook again: one step, to the end.
func (r *rbFaults) nextRuns(host string) {
	r.t.Helper()
	a := r.mustRun("next-"+host, host, 1, "", "", "")
	if o := r.waitEnded(a.id, 60*time.Second); o.status != "succeeded" {
		r.t.Errorf("the next run on %s: %s (%s)", host, o.status, o.error)
	}
	r.checkSteps("next-"+host, "S 1", "E 1")
}

// TestFaultsRunbookWorkerKilled SIGKILLs the worker running a runbook in
// its second step, starts another and checks that the run is recorded
// interrupted, no step ran after the kill or twice, nothing of the run is
// left (its step's process, its run directory with the script and its
// inputs) and the host runs the next run.
func TestFaultsRunbookWorkerKilled(t *testing.T) {
	r := newRBFaults(t)
	w := r.worker("h1")
	a := r.mustRun("k", "h1", 4, "", "", "")
	r.waitLine("k", "S 2", 60*time.Second)
	w.signal(syscall.SIGKILL)
	if !w.waitExit(10 * time.Second) {
		t.Fatal("the worker did not exit after SIGKILL")
	}
	r.note("kill -9 worker %d in step 2", w.pid())
	r.worker("h1")
	o := r.waitEnded(a.id, 60*time.Second)
	if o.status != "interrupted" || o.attempts != 1 {
		t.Errorf("the killed run: %s after %d starts (%s), want interrupted after 1", o.status, o.attempts, o.error)
	}
	r.nextRuns("h1")
	// A third step would have started 1.5 s after the kill.
	pause(t.Context(), 2*time.Second)
	r.checkSteps("k", "S 1", "E 1", "S 2")
	r.checkClean()
}

// TestFaultsRunbookCancelled cancels a runbook in its second step: the
// run is recorded killed (a cancel's status for a running order), its later steps never start, and nothing of
// it is left.
func TestFaultsRunbookCancelled(t *testing.T) {
	r := newRBFaults(t)
	r.worker("h1")
	a := r.mustRun("c", "h1", 4, "", "", "")
	r.waitLine("c", "S 2", 60*time.Second)
	req, _ := http.NewRequest("POST", r.apiURL+"/v1/orders/"+a.id.String()+"/cancel", nil)
	req.Header.Set("Authorization", "Bearer "+r.token)
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("cancel: %d", resp.StatusCode)
	}
	o := r.waitEnded(a.id, 60*time.Second)
	if o.status != "killed" {
		t.Errorf("the cancelled run: %s (%s), want killed", o.status, o.error)
	}
	pause(t.Context(), 2*time.Second)
	r.checkSteps("c", "S 1", "E 1", "S 2")
	r.checkClean()
	r.nextRuns("h1")
}

// TestFaultsRunbookFrozen freezes (SIGSTOP) the worker running a runbook
// past its lease while a standby waits: the standby takes the host,
// ends the run's steps before it runs anything, and the run is recorded
// interrupted; the frozen worker, thawed, records and runs nothing more.
func TestFaultsRunbookFrozen(t *testing.T) {
	r := newRBFaults(t)
	first := r.worker("h1")
	waitUntil(t, 30*time.Second, "the first worker holds h1", func() bool { return first.logged("worker consuming") })
	standby := r.worker("h1")
	waitUntil(t, 30*time.Second, "the standby waits", func() bool { return standby.logged("waiting as standby") })
	a := r.mustRun("f", "h1", 8, "", "", "")
	r.waitLine("f", "S 1", 60*time.Second)
	// The step's sleep is a child of the script's shell, itself the
	// worker's child. The shell writes the marker's line before it forks
	// the sleep (CI once looked in between, at load ~10): look until a
	// step's sleep is there.
	var running *faultWorker
	waitUntil(t, 20*time.Second, "a worker of h1 runs the runbook's step", func() bool {
		for _, p := range procsWithArgs("sleep", r.stepArg()) {
			for _, w := range r.liveWorkers("h1") {
				if parentPid(parentPid(p)) == w.pid() {
					running = w
				}
			}
		}
		return running != nil
	})
	running.signal(syscall.SIGSTOP)
	r.note("SIGSTOP worker %d", running.pid())
	o := r.waitEnded(a.id, 90*time.Second)
	if o.status != "interrupted" || o.attempts != 1 {
		t.Errorf("the frozen worker's run: %s after %d starts (%s), want interrupted after 1", o.status, o.attempts, o.error)
	}
	steps := r.lines("f")
	r.nextRuns("h1")
	running.signal(syscall.SIGCONT)
	r.note("SIGCONT worker %d", running.pid())
	pause(t.Context(), 3*time.Second)
	if got := r.lines("f"); !slices.Equal(got, steps) {
		t.Errorf("steps ran after the run was recorded interrupted: %q, then %q", steps, got)
	}
	for i, l := range steps {
		if i%2 == 0 && l != fmt.Sprintf("S %d", i/2+1) || i%2 == 1 && l != fmt.Sprintf("E %d", i/2+1) {
			t.Errorf("steps out of order or twice: %q", steps)
			break
		}
	}
	if o := r.row(a.id); o.status != "interrupted" {
		t.Errorf("after the thaw the run is %s", o.status)
	}
	r.checkClean()
}

// TestFaultsRunbookDependencyRestart restarts PostgreSQL (crash) or
// nats-server (kill -9) in the first step of a runbook whose second step
// is a sub-runbook on another host: the run goes on, its delegated token
// still works once the dependency is back (the first step ends only then:
// a call while PostgreSQL is down is answered 503, which the script does
// not retry), every step runs once, and the run and its child are
// recorded succeeded once each.
func TestFaultsRunbookDependencyRestart(t *testing.T) {
	for _, dep := range []string{"postgres", "nats"} {
		t.Run(dep, func(t *testing.T) {
			r := newRBFaults(t)
			r.worker("h1")
			r.worker("h2")
			gate := filepath.Join(r.dir, "gate")
			a := r.executeEnv("d", "h1", 3, "h2", "", "", map[string]string{"GATE": gate})
			if a.code != http.StatusAccepted {
				t.Fatalf("execute: %d %s", a.code, a.body)
			}
			r.waitLine("d", "S 1", 60*time.Second)
			switch dep {
			case "postgres":
				r.pg.restartImmediate()
			case "nats":
				r.nats.kill9()
				pause(t.Context(), 500*time.Millisecond)
				r.nats.start()
			}
			r.note("%s restarted in step 1", dep)
			if err := os.WriteFile(gate, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			o := r.waitEnded(a.id, 90*time.Second)
			if o.status != "succeeded" || o.attempts != 1 {
				t.Errorf("the run: %s after %d starts (%s), output %q", o.status, o.attempts, o.error, o.stdout)
			}
			r.checkSteps("d", "S 1", "E 1", "S child", "E child", "S 2", "E 2", "S 3", "E 3")
			var children int
			if err := r.pool.QueryRow(t.Context(), `SELECT count(*) FROM orders WHERE command = 'runbook:Child.md' AND status = 'succeeded'`).Scan(&children); err != nil || children != 1 {
				t.Errorf("child runs succeeded: %d (%v), want 1", children, err)
			}
			r.checkClean()
		})
	}
}

// TestFaultsRunbookIdempotentAcrossRestart sends a run with an
// Idempotency-Key, kills the API (SIGKILL) while the run is in its first
// step, starts it again and sends the same request twice more (while it
// runs, and with ?wait after): each retry is answered with the first run,
// and the runbook runs once. The worker is then killed and restarted
// between two retries of a finished run: still the first run.
func TestFaultsRunbookIdempotentAcrossRestart(t *testing.T) {
	r := newRBFaults(t)
	r.worker("h1")
	key := "rb-" + r.nonce
	a := r.mustRun("i", "h1", 2, "", key, "")
	r.waitLine("i", "S 1", 60*time.Second)
	r.killAPI()
	r.note("kill -9 api in step 1")
	r.startAPI()
	again := r.mustRun("i", "h1", 2, "", key, "")
	if again.id != a.id || !again.replayed {
		t.Errorf("retry while running: order %s (replayed %v), want %s", again.id, again.replayed, a.id)
	}
	done := r.mustRun("i", "h1", 2, "", key, "60")
	if done.id != a.id || done.code != http.StatusOK || done.status != "succeeded" {
		t.Errorf("waiting retry: %d order %s %s, want 200 %s succeeded", done.code, done.id, done.status, a.id)
	}
	for _, w := range r.liveWorkers("h1") {
		w.signal(syscall.SIGKILL)
		w.waitExit(10 * time.Second)
	}
	r.worker("h1")
	last := r.mustRun("i", "h1", 2, "", key, "")
	if last.id != a.id || last.code != http.StatusOK || !last.replayed {
		t.Errorf("retry after a worker restart: %d order %s (replayed %v), want 200 %s", last.code, last.id, last.replayed, a.id)
	}
	r.nextRuns("h1")
	r.checkSteps("i", "S 1", "E 1", "S 2", "E 2")
	if o := r.row(a.id); o.status != "succeeded" || o.attempts != 1 {
		t.Errorf("the run: %s after %d starts", o.status, o.attempts)
	}
	r.checkClean()
}

// TestFaultsRunbookChildOfAnEndedRun ends a runbook run from outside
// (its worker killed, or a cancel) while the sub-runbook it waits for is
// still queued (the child's host has no worker yet): the child must not
// start once its host's worker comes, since the run that waited for it,
// and would have gone on after it, is over.
func TestFaultsRunbookChildOfAnEndedRun(t *testing.T) {
	for _, how := range []string{"kill9", "cancel"} {
		t.Run(how, func(t *testing.T) {
			r := newRBFaults(t)
			w := r.worker("h1")
			a := r.mustRun("p", "h1", 2, "h2", "", "")
			var child string
			waitUntil(t, 60*time.Second, "the child is queued", func() bool {
				return r.pool.QueryRow(t.Context(), `SELECT id::text FROM orders WHERE command = 'runbook:Child.md' AND status = 'queued'`).Scan(&child) == nil
			})
			switch how {
			case "kill9":
				w.signal(syscall.SIGKILL)
				w.waitExit(10 * time.Second)
				r.worker("h1")
			case "cancel":
				req, _ := http.NewRequest("POST", r.apiURL+"/v1/orders/"+a.id.String()+"/cancel", nil)
				req.Header.Set("Authorization", "Bearer "+r.token)
				resp, err := r.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
			r.note("%s the parent while its child %s is queued", how, child)
			p := r.waitEnded(a.id, 60*time.Second)
			r.worker("h2")
			c := r.waitEnded(uuid.MustParse(child), 60*time.Second)
			if c.status != "canceled" || c.error != postgres.ParentEndedReason {
				t.Errorf("the child of a run that ended %s: %s (%s), want canceled: its parent ended", p.status, c.status, c.error)
			}
			r.checkSteps("p", "S 1", "E 1")
			r.nextRuns("h2")
			r.checkClean()
		})
	}
}
