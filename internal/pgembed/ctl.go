package pgembed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/orderly-run/orderly/internal/procfs"
	"github.com/orderly-run/orderly/internal/timerslack"
)

// settingName is what a PostgreSQL parameter name looks like (including
// extension.parameter); anything else would be smuggled into a command line.
var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

func checkSettings(settings map[string]string) error {
	for name := range settings {
		if !settingName.MatchString(name) {
			return fmt.Errorf("pgembed: invalid setting name %q", name)
		}
	}
	return nil
}

// initdb creates the cluster unless Dir/data/PG_VERSION shows there is one.
func (s *Server) initdb(ctx context.Context, fsync bool) error {
	if _, err := os.Stat(filepath.Join(s.dataDir, "PG_VERSION")); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("inspect %s: %w", s.dataDir, err)
	}
	args := []string{"-D", s.dataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8"}
	if !fsync {
		args = append(args, "--no-sync")
	}
	began := time.Now()
	out, err := s.run(ctx, "initdb", append(args, "--locale=C.UTF-8")...)
	if err != nil {
		// Minimal systems may lack the C.UTF-8 locale; initdb removes what
		// it created when it fails, so retrying in place is safe.
		s.logger.Debug("initdb with C.UTF-8 failed, retrying with --no-locale", "error", err, "output", string(out))
		out, err = s.run(ctx, "initdb", append(args, "--no-locale")...)
	}
	if err != nil {
		return fmt.Errorf("initdb %s: %w\n%s", s.dataDir, err, out)
	}
	s.initialized = true
	s.logger.Info("postgresql cluster initialized", "data_dir", s.dataDir, "duration_ms", time.Since(began).Milliseconds())
	return nil
}

// start runs pg_ctl start, unless a server is already running on the data
// directory with the same socket, in which case it is adopted.
func (s *Server) start(ctx context.Context, fsync bool, extra map[string]string) error {
	running, err := s.adopt(ctx)
	if err != nil || running {
		return err
	}
	s.waitReaped(ctx)
	fsyncValue := "off"
	if fsync {
		fsyncValue = "on"
	}
	post := []string{
		"-k", s.runDir,
		"-p", strconv.Itoa(s.port),
		"-c", "listen_addresses=",
		"-c", "fsync=" + fsyncValue,
		// orderly's statements are lookups by key and LIMITed scans; the
		// planner prices some (the lost-order search) by the whole queue
		// behind their LIMIT, and JIT then spent a third of a second of
		// CPU compiling what ran in milliseconds (docs/benchmarks.md,
		// hE27). ExtraSettings, after it, may turn it on again.
		"-c", "jit=off",
	}
	for _, name := range slices.Sorted(maps.Keys(extra)) {
		post = append(post, "-c", name+"="+extra[name])
	}
	// pg_ctl hands -o to /bin/sh, so every word is shell-quoted.
	quoted := make([]string, len(post))
	for i, w := range post {
		quoted[i] = shellQuote(w)
	}
	began := time.Now()
	out, err := s.run(ctx, "pg_ctl", "start", "-w", "-t", strconv.Itoa(int(startTimeout.Seconds())),
		"-D", s.dataDir, "-l", s.logFile, "-o", strings.Join(quoted, " "))
	if err != nil {
		return fmt.Errorf("start postgresql in %s: %w\n%s%s", s.dataDir, err, out, s.logTail())
	}
	s.logger.Info("postgresql started", "duration_ms", time.Since(began).Milliseconds())
	return nil
}

// waitReaped waits, up to startTimeout, while postmaster.pid names a
// process of the cluster's user that exited and that its parent has not
// reaped yet: a postmaster killed, until init (or the subreaper it was
// handed to) reaps it. Its pid is not free until then, and postgres
// refuses to start beside a pid file naming a pid of its user that
// exists ("lock file already exists"): the supervisor's tries failed,
// one after the other, for as long as the zombie stayed (over a minute,
// once, on a loaded machine whose init reaps by polling), and a serve
// started then ended its start. Past startTimeout the start is tried
// anyway, and postgres's refusal says why. Another user's zombie (the
// pid given to another process since, dead and not reaped) is not
// waited for: postgres, which may not signal it, starts beside it, and
// the start waited the whole startTimeout for nothing.
func (s *Server) waitReaped(ctx context.Context) {
	dir, err := os.Stat(s.dataDir)
	if err != nil {
		return
	}
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(filepath.Join(s.dataDir, "postmaster.pid"))
		if err != nil {
			return
		}
		pid := pidOf(b)
		if f := procfs.Fields(pid); f == nil || f[0] != "Z" {
			return
		}
		// /proc/<pid> is the process's user's, a zombie's too.
		if p, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil || ownerOf(p) != ownerOf(dir) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// adopt reports whether a live server from a previous run already serves the
// data directory on our socket, and waits until it accepts connections. A
// live server on another socket or port is stopped so that it can be started
// with the current settings. Stale pid files are left to pg_ctl.
func (s *Server) adopt(ctx context.Context) (bool, error) {
	pidFile := filepath.Join(s.dataDir, "postmaster.pid")
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("read %s: %w", pidFile, err)
	}
	// pg_ctl status exits 0 only when the pid in the file is alive; a
	// live pid that is not a process of the data directory is a dead
	// postmaster's, reused: adopted, it was waited for a minute. Left to
	// pg_ctl start, postgres either starts (the pid is another user's) or
	// refuses with the reason, which the supervisor logs.
	if _, err := s.run(ctx, "pg_ctl", "status", "-D", s.dataDir); err != nil || !s.postmasterAlive(pidOf(b)) {
		return false, nil
	}
	// postmaster.pid lines: pid, data dir, start time, port, socket dir, ...
	lines := strings.Split(string(b), "\n")
	if len(lines) < 5 || lines[3] != strconv.Itoa(s.port) || lines[4] != s.runDir {
		s.logger.Warn("postgresql from a previous run uses other settings, restarting it", "pid_file", pidFile)
		if out, err := s.run(ctx, "pg_ctl", "stop", "-D", s.dataDir, "-m", "fast", "-w"); err != nil {
			return false, fmt.Errorf("stop postgresql left running in %s: %w\n%s", s.dataDir, err, out)
		}
		return false, nil
	}
	s.reused = true
	s.logger.Info("adopting postgresql left running by a previous run", "pid", lines[0])
	return true, s.waitReady(ctx)
}

// waitReady polls until the server accepts a connection to the postgres
// database, for an adopted server that may still be starting up.
func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		conn, err := pgx.Connect(ctx, s.DSNFor("postgres"))
		if err == nil {
			return conn.Close(ctx)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for postgresql left running in %s: %w", s.dataDir, err)
		case <-tick.C:
		}
	}
}

// ensureDatabase creates db unless it exists.
func (s *Server) ensureDatabase(ctx context.Context, db string) error {
	conn, err := pgx.Connect(ctx, s.DSNFor("postgres"))
	if err != nil {
		return fmt.Errorf("connect to postgresql: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", db).Scan(&exists); err != nil {
		return fmt.Errorf("look for database %q: %w", db, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database: created meanwhile
		return nil
	}
	if err != nil {
		return fmt.Errorf("create database %q: %w", db, err)
	}
	s.logger.Info("database created", "database", db)
	return nil
}

// run runs one of the PostgreSQL programs as the cluster's owner and returns
// its combined output.
func (s *Server) run(ctx context.Context, program string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(s.binDir, program), args...)
	// The caller's working directory (e.g. /root) may be closed to postgres.
	cmd.Dir = s.dir
	cmd.Env = childEnv(os.Environ())
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.owner.credential()}
	// postgres is forked by pg_ctl with its output redirected to the log, so
	// the pipes close when pg_ctl exits; WaitDelay guards against surprises.
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := timerslack.Start(cmd, s.slack, s.ownSlack); err != nil {
		return nil, err
	}
	err := cmd.Wait()
	return out.Bytes(), err
}

// childEnv drops PG* variables, which would otherwise let the caller's
// environment (PGDATA, PGPORT, PGOPTIONS…) override what Start decided,
// and systemd's notify and socket-activation variables, which are the
// service's: postgres, built with systemd support, would tell the
// service manager it is ready (or stopping) in serve's name.
func childEnv(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_PID", "WATCHDOG_USEC":
			return true
		}
		return strings.HasPrefix(kv, "PG")
	})
}

// logTail returns the end of postgres.log, which is where the real reason
// for a failed start is written.
func (s *Server) logTail() string {
	const maxBytes = 4096
	f, err := os.Open(s.logFile)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > maxBytes {
		if _, err := f.Seek(-maxBytes, io.SeekEnd); err != nil {
			return ""
		}
	}
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return "--- end of " + s.logFile + " ---\n" + strings.Join(lines, "\n")
}

// shellQuote quotes w for /bin/sh.
func shellQuote(w string) string {
	return "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
}
