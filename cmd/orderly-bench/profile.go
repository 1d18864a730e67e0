package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// buildProfiled builds cmd/orderly with overlay/pprof.go.txt added (go build
// -overlay) into dir, for -profile: the same orderly, plus net/http/pprof
// on BENCH_PPROF_ADDR.
func buildProfiled(dir string) (string, error) {
	src, err := filepath.Abs("cmd/orderly-bench/overlay/pprof.go.txt")
	if err != nil {
		return "", err
	}
	target, err := filepath.Abs("cmd/orderly/zz_bench_pprof.go")
	if err != nil {
		return "", err
	}
	ov, _ := json.Marshal(map[string]any{"Replace": map[string]string{target: src}})
	ovPath := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(ovPath, ov, 0o644); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "orderly-pprof")
	version := "dev"
	if v, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		version = strings.TrimSpace(string(v)) + "+pprof"
	}
	out, err := exec.Command("go", "build", "-ldflags", "-X main.version="+version, "-overlay", ovPath, "-o", bin, "./cmd/orderly").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build -overlay: %v: %s", err, out)
	}
	return bin, nil
}

// profiledBinary points o.bin at a profiled build and gives serve the
// address of its pprof listener.
func profiledBinary(o *options) error {
	if err := os.MkdirAll(o.profile, 0o755); err != nil {
		return err
	}
	bin, err := buildProfiled(o.profile)
	if err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	o.bin = bin
	o.pprofURL = fmt.Sprintf("http://127.0.0.1:%d", port)
	return os.Setenv("BENCH_PPROF_ADDR", fmt.Sprintf("127.0.0.1:%d", port))
}

// profilePaths profiles the three paths of an order (profileLoad) and
// returns the budget table.
func profilePaths(ctx context.Context, srv *server, c *client, o options) (string, error) {
	d := 10 * time.Second
	do := orderlySync(srv.url, srv.token, []string{o.backlogHost})
	paths := []contender{
		{name: "sync submit and wait, 1 connection", run: func(ctx context.Context) (loadResult, error) {
			return closedLoop(ctx, 1, d, srv.cpu, do)
		}},
		asyncLoad(srv, o.nowhereHost, 32, d),
		{name: "worker backlog (2,000 orders)", run: func(ctx context.Context) (loadResult, error) {
			b, err := runBacklog(ctx, c, srv, o.backlogHost, orderBody(o.backlogHost, "true"), 2000, o.submitters, o.pollInterval)
			if err != nil {
				return loadResult{}, err
			}
			return loadResult{n: len(b.list), wall: b.observed}, nil
		}},
	}
	out := budgetHeader
	for i, p := range paths {
		name := []string{"sync", "async", "backlog"}[i]
		progress("profile: " + p.name)
		row, err := profileLoad(ctx, srv, o.pprofURL, o.profile, name, p, d)
		if err != nil {
			return "", fmt.Errorf("profile %s: %w", name, err)
		}
		out += row
	}
	return out, nil
}

// counters is what one order costs, read from PostgreSQL's statistics, Go's
// allocator in serve and strace's syscall counts.
type counters struct {
	commits, inserted, updated, deleted, fetched, walRecords, walSync int64
	mallocs                                                           int64
}

func readCounters(ctx context.Context, srv *server, pprofURL string) (counters, error) {
	var c counters
	out, err := exec.CommandContext(ctx, "psql", "-qAtX", srv.dsn, "-F", " ", "-c",
		`SELECT d.xact_commit, d.tup_inserted, d.tup_updated, d.tup_deleted, d.tup_fetched, w.wal_records, w.wal_sync
		 FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = current_database()`).Output()
	if err != nil {
		return c, fmt.Errorf("psql: read statistics: %w", err)
	}
	f := strings.Fields(string(out))
	if len(f) != 7 {
		return c, fmt.Errorf("psql: statistics: %q", out)
	}
	v := make([]int64, 7)
	for i := range f {
		v[i], _ = strconv.ParseInt(f[i], 10, 64)
	}
	c.commits, c.inserted, c.updated, c.deleted, c.fetched, c.walRecords, c.walSync = v[0], v[1], v[2], v[3], v[4], v[5], v[6]
	if pprofURL != "" {
		resp, err := http.Get(pprofURL + "/debug/pprof/heap?debug=1")
		if err != nil {
			return c, err
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "# Mallocs = "); ok {
				c.mallocs, _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	return c, nil
}

// profileLoad runs one load against a profiled serve: a CPU profile of
// its middle, the allocation profile before and after, PostgreSQL's
// counters, and (pass two, with strace attached to serve) the syscalls.
// Files go to dir/<name>.*; it returns the budget row.
func profileLoad(ctx context.Context, srv *server, pprofURL, dir, name string, load contender, d time.Duration) (string, error) {
	save := func(path, file string) error {
		resp, err := http.Get(pprofURL + path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		f, err := os.Create(filepath.Join(dir, name+"."+file))
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(f, resp.Body)
		return err
	}
	if err := save("/debug/pprof/allocs", "allocs0.pb.gz"); err != nil {
		return "", err
	}
	c0, err := readCounters(ctx, srv, pprofURL)
	if err != nil {
		return "", err
	}
	cpuDone := make(chan error, 1)
	go func() {
		cpuDone <- save(fmt.Sprintf("/debug/pprof/profile?seconds=%d", max(1, int(d.Seconds())-1)), "cpu.pb.gz")
	}()
	res, err := load.run(ctx)
	if err != nil {
		return "", err
	}
	if err := <-cpuDone; err != nil {
		return "", err
	}
	if err := save("/debug/pprof/allocs", "allocs1.pb.gz"); err != nil {
		return "", err
	}
	time.Sleep(1500 * time.Millisecond) // PostgreSQL publishes its statistics at most once a second
	c1, err := readCounters(ctx, srv, pprofURL)
	if err != nil {
		return "", err
	}
	// Pass two: the same load with strace counting serve's syscalls.
	st := filepath.Join(dir, name+".strace")
	sc := exec.Command("strace", "-f", "-c", "-o", st, "-p", strconv.Itoa(srv.cmd.Process.Pid))
	if err := sc.Start(); err != nil {
		return "", fmt.Errorf("strace: %w", err)
	}
	time.Sleep(500 * time.Millisecond) // strace attaches to every thread
	res2, err := load.run(ctx)
	_ = sc.Process.Signal(os.Interrupt)
	_ = sc.Wait()
	if err != nil {
		return "", err
	}
	n := float64(res.n)
	per := func(a, b int64) string { return fmt.Sprintf("%.2f", float64(b-a)/n) }
	sys := straceCounts(st)
	n2 := float64(res2.n)
	syscall := func(names ...string) string {
		var t int64
		for _, s := range names {
			t += sys[s]
		}
		return fmt.Sprintf("%.1f", float64(t)/n2)
	}
	return fmt.Sprintf("| %s | %d | %s | %s / %s / %s | %s | %s | %s | %s | %s | %s |\n", name, res.n,
		per(c0.commits, c1.commits), per(c0.inserted, c1.inserted), per(c0.updated, c1.updated), per(c0.deleted, c1.deleted),
		per(c0.walRecords, c1.walRecords), per(c0.walSync, c1.walSync), syscall("fdatasync", "fsync"),
		syscall("write", "sendmsg", "sendto", "writev"), syscall("read", "recvfrom", "recvmsg"), per(c0.mallocs, c1.mallocs)), nil
}

// budgetHeader heads profileLoad's rows.
const budgetHeader = "\n| path | orders | PostgreSQL commits | rows inserted / updated / deleted | WAL records | WAL fsyncs | serve fsyncs (JetStream) | serve socket writes | serve socket reads | serve allocations |\n|---|---|---|---|---|---|---|---|---|---|\n"

// straceCounts reads `strace -c` output: calls per syscall.
func straceCounts(path string) map[string]int64 {
	out := map[string]int64{}
	b, err := os.ReadFile(path)
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		calls, err := strconv.ParseInt(f[3], 10, 64)
		if err != nil {
			continue
		}
		out[f[len(f)-1]] = calls
	}
	return out
}
