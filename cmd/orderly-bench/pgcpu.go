package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/orderly-run/orderly/internal/procfs"
)

// pgKind is a kind of the managed cluster's processes, as the title the
// postmaster gives each child says it (/proc/<pid>/cmdline). PostgreSQL's
// CPU per sync order went from 1.77 to 3.23 ms between two quiet benches
// with the same statements per order, and the sum over its processes
// could not say whether the backends did more or autovacuum or the
// writers ran in the window (docs/decisions.md, hB28).
type pgKind int

const (
	pgClients    pgKind = iota // client backends: orderly's statements, the floor's and pgbench's
	pgAutovacuum               // the launcher and its workers
	pgWriters                  // checkpointer, background writer, WAL writer
	pgOthers                   // the postmaster itself, the logical replication launcher, the rest
	pgEnded                    // what children spent after their last reading, before they ended
	pgKinds
)

var pgKindNames = [pgKinds]string{"client backends", "autovacuum", "checkpointer, bgwriter, walwriter", "postmaster and others", "ended unseen"}

// pgKindOf reads a child's title: "postgres: walwriter",
// "postgres: autovacuum worker orderly", or a client backend's
// "postgres: <user> <database> <host> <activity>".
func pgKindOf(title string) pgKind {
	t, titled := strings.CutPrefix(strings.TrimSpace(title), "postgres: ")
	switch {
	case !titled: // just forked: the postmaster's own command line still
		return pgOthers
	case strings.HasPrefix(t, "autovacuum "):
		return pgAutovacuum
	case t == "checkpointer" || t == "background writer" || t == "walwriter":
		return pgWriters
	case strings.HasPrefix(t, "parallel worker "):
		return pgClients // a backend's helper, working for its statement
	case strings.HasPrefix(t, "logical replication "), t == "archiver", t == "startup", strings.HasPrefix(t, "stats collector"):
		return pgOthers
	case len(strings.Fields(t)) >= 3: // user, database, host: a connection
		return pgClients
	}
	return pgOthers
}

// pgProc is one child of the postmaster at a reading: its kind and its
// CPU so far; titled once it has its own title (a child's first moments
// show the postmaster's command line).
type pgProc struct {
	kind   pgKind
	cpu    time.Duration
	titled bool
}

// pgSample is the managed cluster's CPU at a moment: each living child's,
// the postmaster's own, what the postmaster has reaped of its children
// that ended, and, of that, the last reading of each ended child that a
// reading saw, under its kind.
type pgSample struct {
	procs      map[int]pgProc
	postmaster time.Duration
	reaped     time.Duration
	ended      [pgKinds]time.Duration
	ok         bool // the postmaster was read
}

// pgWatch reads the managed cluster's processes every poll and at each
// sample. An autovacuum worker lives a few seconds (0.3 – 4.5 s on the
// bench, one of them 0.52 s of CPU): it starts and ends between the two
// samples of a 2-s load, and only the postmaster's reaped CPU counted it,
// under no kind. Read every poll, a child that ended keeps its last
// reading under its kind; what it spent after that reading (at most a
// poll's worth) is "ended unseen".
type pgWatch struct {
	postmaster func() int // 0: none (an external database)
	mu         sync.Mutex
	last       pgSample
	stop       chan struct{}
	stopOnce   sync.Once
	done       chan struct{}
}

// watchPG starts reading the cluster of postmaster every poll until stop.
func watchPG(postmaster func() int, poll time.Duration) *pgWatch {
	w := &pgWatch{postmaster: postmaster, last: pgSample{procs: map[int]pgProc{}},
		stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		// On a thread of its own, whose CPU is the watcher's: ten
		// readings a second of the cluster's processes are the bench's
		// work, not the client's, and counted in the client's figure
		// they were about 20 ms a second, 0.1 ms per orderly/1 order
		// (watcherCPU).
		runtime.LockOSThread()
		self := fmt.Sprintf("/proc/self/task/%d/stat", syscall.Gettid())
		var spent time.Duration
		t := time.NewTicker(poll)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
				w.sample()
				if f := procfs.FieldsOf(self); f != nil {
					now := ticks(f[11]) + ticks(f[12])
					watcherCPU.Add(int64(now - spent))
					spent = now
				}
			}
		}
	}()
	return w
}

// watcherCPU is the CPU the pgWatch polls have spent so far, which
// machineAndBench takes out of the bench's own.
var watcherCPU atomic.Int64

// close stops the readings and waits for the last one.
func (w *pgWatch) close() {
	w.stopOnce.Do(func() { close(w.stop) })
	<-w.done
}

// sample reads the cluster now: each child's CPU, a new or untitled
// child's title, and the children gone since the last reading, whose
// last reading moves to ended.
func (w *pgWatch) sample() pgSample {
	w.mu.Lock()
	defer w.mu.Unlock()
	pm := w.postmaster()
	f := procfs.Fields(pm)
	if pm <= 0 || f == nil {
		return pgSample{}
	}
	s := pgSample{procs: map[int]pgProc{}, ok: true, ended: w.last.ended,
		postmaster: ticks(f[11]) + ticks(f[12]), reaped: ticks(f[13]) + ticks(f[14])}
	for _, pid := range pgChildren(pm) {
		f := procfs.Fields(pid)
		if f == nil {
			continue
		}
		p, known := w.last.procs[pid]
		if !known || !p.titled {
			title, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if err != nil {
				continue
			}
			t := strings.ReplaceAll(string(title), "\x00", " ")
			p.kind, p.titled = pgKindOf(t), strings.HasPrefix(t, "postgres: ")
		}
		p.cpu = ticks(f[11]) + ticks(f[12]) + ticks(f[13]) + ticks(f[14])
		s.procs[pid] = p
	}
	for pid, p := range w.last.procs {
		if _, alive := s.procs[pid]; !alive {
			s.ended[p.kind] += p.cpu
		}
	}
	w.last = s
	return s
}

// pgChildren lists postmaster's children from /proc/<pid>/task/<pid>/children,
// one read where a scan of /proc reads every process's stat, or from that
// scan where the kernel has no such file.
func pgChildren(pm int) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pm, pm))
	if err != nil {
		return procfs.Children(pm)
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// total is the cluster's CPU so far, every process counted once: the
// living children's, the postmaster's own and the reaped.
func (s pgSample) total() time.Duration {
	t := s.postmaster + s.reaped
	for _, p := range s.procs {
		t += p.cpu
	}
	return t
}

// pgSplit is the CPU between samples a and b by kind; its sum is
// b.total() - a.total(). A child living at b counts what it spent since
// a (all of it if it started since). One that ended counts, under its
// kind, its last reading less what a counted of it; the rest of the
// reaped CPU (spent after a child's last reading, or by a child no
// reading saw) is ended unseen.
func pgSplit(a, b pgSample) [pgKinds]time.Duration {
	var by [pgKinds]time.Duration
	if !a.ok || !b.ok {
		return by
	}
	for pid, p := range b.procs {
		by[p.kind] += p.cpu - a.procs[pid].cpu
	}
	by[pgOthers] += b.postmaster - a.postmaster
	by[pgEnded] = b.reaped - a.reaped
	for k := range pgEnded {
		by[k] += b.ended[k] - a.ended[k]
		by[pgEnded] -= b.ended[k] - a.ended[k]
	}
	for pid, p := range a.procs {
		if _, alive := b.procs[pid]; !alive {
			by[p.kind] -= p.cpu
		}
	}
	return by
}

// describePG is PostgreSQL's CPU per order by kind, the kinds that spent
// any: "client backends 2.90, autovacuum 0.21".
func describePG(by [pgKinds]time.Duration, n int) string {
	var parts []string
	for k, d := range by {
		if d != 0 {
			parts = append(parts, fmt.Sprintf("%s %.2f", pgKindNames[k], ms64(d)/float64(max(n, 1))))
		}
	}
	return strings.Join(parts, ", ")
}

// pgShares is PostgreSQL's CPU over wall by kind, in percent of a core,
// the kinds that spent any: "client backends 31 %, autovacuum 9 %".
func pgShares(by [pgKinds]time.Duration, wall time.Duration) string {
	var parts []string
	for k, d := range by {
		if d != 0 && wall > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f %%", pgKindNames[k], 100*d.Seconds()/wall.Seconds()))
		}
	}
	return strings.Join(parts, ", ")
}
