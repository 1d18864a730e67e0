package main

import (
	"fmt"
	"os"
	"strings"
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
	pgEnded                    // children that ended in the window: closed connections, autovacuum workers
	pgKinds
)

var pgKindNames = [pgKinds]string{"client backends", "autovacuum", "checkpointer, bgwriter, walwriter", "postmaster and others", "ended meanwhile"}

// pgKindOf reads a child's title: "postgres: walwriter",
// "postgres: autovacuum worker orderly", or a client backend's
// "postgres: <user> <database> <host> <activity>".
func pgKindOf(title string) pgKind {
	t := strings.TrimPrefix(strings.TrimSpace(title), "postgres: ")
	switch {
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

// pgProc is one child of the postmaster at a sample: its kind and its
// CPU so far.
type pgProc struct {
	kind pgKind
	cpu  time.Duration
}

// pgSample is the managed cluster's CPU at a moment: each child's, the
// postmaster's own, and what the postmaster has reaped of its children
// that ended (their whole CPU: the part before the window was counted
// under their kind in the sample before).
type pgSample struct {
	procs      map[int]pgProc
	postmaster time.Duration
	reaped     time.Duration
	ok         bool // the postmaster was read
}

// samplePG reads the postmaster pm and its children from /proc.
func samplePG(pm int) pgSample {
	s := pgSample{procs: map[int]pgProc{}}
	if f := procfs.Fields(pm); f != nil {
		s.postmaster = ticks(f[11]) + ticks(f[12])
		s.reaped = ticks(f[13]) + ticks(f[14])
		s.ok = true
	}
	for _, pid := range procfs.Children(pm) {
		f := procfs.Fields(pid)
		title, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if f == nil || err != nil {
			continue
		}
		s.procs[pid] = pgProc{kind: pgKindOf(strings.ReplaceAll(string(title), "\x00", " ")),
			cpu: ticks(f[11]) + ticks(f[12]) + ticks(f[13]) + ticks(f[14])}
	}
	return s
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
// a (all of it if it started since); one living at a and gone at b
// counts under ended, as the reaped CPU less what a had counted of it,
// with the children that started and ended between the samples.
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
	for pid, p := range a.procs {
		if _, alive := b.procs[pid]; !alive {
			by[pgEnded] -= p.cpu
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
