// Package pgembed runs a private PostgreSQL cluster from the system's server
// binaries, so that `orderly serve` and the tests need no database set up by
// hand. The cluster listens only on a unix socket in a directory that only
// its owner (and root) can enter.
package pgembed

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/orderly-run/orderly/internal/logging"
	"github.com/orderly-run/orderly/internal/procfs"
	"github.com/orderly-run/orderly/internal/timerslack"
)

// maxSocketPath is the longest path a unix socket can have on Linux:
// sun_path is 108 bytes including the terminating NUL.
const maxSocketPath = 107

// startTimeout bounds how long pg_ctl waits for the server to start or stop.
const startTimeout = 60 * time.Second

// Options configures Start. Only Dir is required.
type Options struct {
	// Dir holds everything: data/ (the cluster), run/ (the unix socket) and
	// postgres.log. It is created if missing.
	Dir string
	// BinDir holds initdb, pg_ctl and postgres; FindBinaries when empty.
	BinDir string
	// Port is the number in the socket's name (.s.PGSQL.<port>); nothing
	// listens on TCP. Default 5432.
	Port int
	// Database is created if missing and is what DSN points at. Default
	// "orderly".
	Database string
	// Fsync must be true for data that matters: false (fsync=off, and initdb
	// --no-sync) risks corruption on a crash and is only for tests.
	Fsync bool
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
	// ExtraSettings are passed to postgres as -c name=value.
	ExtraSettings map[string]string
	// TimerSlack is the timer slack the PostgreSQL programs start with
	// (timerslack.Start), when > 0: serve runs with milliseconds of it
	// for Go's runtime monitor, which the cluster must not inherit (an
	// autovacuum's 2 ms cost delay would sleep up to 7). 0: they inherit
	// the caller's.
	TimerSlack time.Duration
}

// Server is a running cluster started (or adopted) by Start.
type Server struct {
	binDir   string
	dir      string
	dataDir  string
	runDir   string
	logFile  string
	port     int
	database string
	owner    *owner
	logger   *slog.Logger
	fsync    bool              // as started, for Supervise
	extra    map[string]string // as started, for Supervise
	// slack is the programs' timer slack (Options.TimerSlack), own the
	// process's, put back after each start; slack 0: inherited.
	slack, ownSlack time.Duration

	mu      sync.Mutex
	failing NotStarting // Supervise's failed starts in a row; Tries 0: none

	// initialized is true when Start ran initdb, reused when it adopted a
	// server that was already running; tests look at both.
	initialized bool
	reused      bool
}

// Start initializes the cluster in opts.Dir if needed, starts it (or adopts a
// server a previous run left running on the same data directory) and creates
// opts.Database if it does not exist. When running as root the PostgreSQL
// programs run as the postgres OS user, which owns opts.Dir.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("pgembed: Options.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("pgembed: data directory: %w", err)
	}
	if opts.Port == 0 {
		opts.Port = 5432
	}
	if opts.Port < 1 || opts.Port > 65535 {
		return nil, fmt.Errorf("pgembed: port %d out of range", opts.Port)
	}
	if opts.Database == "" {
		opts.Database = "orderly"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.BinDir == "" {
		if opts.BinDir, err = FindBinaries(); err != nil {
			return nil, err
		}
	}
	if err := checkSettings(opts.ExtraSettings); err != nil {
		return nil, err
	}

	s := &Server{
		binDir:   opts.BinDir,
		dir:      dir,
		dataDir:  filepath.Join(dir, "data"),
		runDir:   filepath.Join(dir, "run"),
		logFile:  filepath.Join(dir, "postgres.log"),
		port:     opts.Port,
		database: opts.Database,
		logger:   opts.Logger.With("pg_dir", dir),
		fsync:    opts.Fsync,
		extra:    maps.Clone(opts.ExtraSettings),
	}
	if own, err := timerslack.Own(); err == nil && opts.TimerSlack > 0 {
		s.slack, s.ownSlack = opts.TimerSlack, own
	}
	if sock := s.socketPath(); len(sock) > maxSocketPath {
		return nil, fmt.Errorf("pgembed: unix socket path %s is %d bytes, over the %d-byte limit: choose a shorter data directory",
			sock, len(sock), maxSocketPath)
	}
	if s.owner, err = lookupOwner(); err != nil {
		return nil, fmt.Errorf("pgembed: %w", err)
	}
	if err := s.prepareDirs(); err != nil {
		return nil, fmt.Errorf("pgembed: %w", err)
	}

	began := time.Now()
	if err := s.initdb(ctx, opts.Fsync); err != nil {
		return nil, fmt.Errorf("pgembed: %w", err)
	}
	if err := s.start(ctx, opts.Fsync, opts.ExtraSettings); err != nil {
		return nil, fmt.Errorf("pgembed: %w", err)
	}
	if err := s.ensureDatabase(ctx, s.database); err != nil {
		// Do not leave a server running that nobody will stop.
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), startTimeout)
		defer cancel()
		return nil, errors.Join(fmt.Errorf("pgembed: %w", err), s.Stop(stopCtx))
	}
	s.logger.Info("postgresql ready",
		"socket_dir", s.runDir, "port", s.port, "database", s.database,
		"initdb", s.initialized, "reused", s.reused, "duration_ms", time.Since(began).Milliseconds())
	return s, nil
}

// prepareDirs creates Dir and Dir/run and, as root, hands them to postgres.
func (s *Server) prepareDirs() error {
	// Missing parents are made world-searchable so that postgres can reach
	// Dir; Dir itself stays private.
	if err := os.MkdirAll(filepath.Dir(s.dir), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(s.dir), err)
	}
	if err := os.Mkdir(s.dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create %s: %w", s.dir, err)
	}
	// An existing Dir is made private again, as Dir/run is below: one
	// restored by a cp under a umask of 000 (0777) let any local user
	// put a symlink where postgres.log was, and pg_ctl -l, run as
	// postgres, appended to whatever file of postgres's it named
	// (postgresql.auto.conf, which the cluster then failed to parse at
	// its next start).
	if err := os.Chmod(s.dir, 0o700); err != nil {
		return fmt.Errorf("restrict %s: %w", s.dir, err)
	}
	if err := s.owner.checkTraverse(s.dir); err != nil {
		return err
	}
	if err := s.owner.chown(s.dir); err != nil {
		return err
	}
	if err := os.Mkdir(s.runDir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create %s: %w", s.runDir, err)
	}
	// SECURITY: the cluster uses auth=trust, so whoever can open the socket
	// is a superuser. Mode 0700 on the socket directory, owned by the
	// cluster's user, is what limits that to this user (and root).
	if err := os.Chmod(s.runDir, 0o700); err != nil {
		return fmt.Errorf("restrict %s: %w", s.runDir, err)
	}
	if err := s.owner.chown(s.runDir); err != nil {
		return err
	}
	// pg_ctl appends to the log as postgres; a log left by a non-root run
	// must become writable to it.
	// One that is not a regular file was put there (see above): removed,
	// so pg_ctl creates its own. So is one with another name besides: a
	// hard link there is a regular file, and chowned it gave the file it
	// names to postgres.
	if fi, err := os.Lstat(s.logFile); err == nil && (!fi.Mode().IsRegular() || linked(fi)) {
		if err := os.Remove(s.logFile); err != nil {
			return fmt.Errorf("remove %s, which is not a file of its own: %w", s.logFile, err)
		}
	} else if err == nil {
		if err := s.owner.chown(s.logFile); err != nil {
			return err
		}
	}
	return nil
}

// linked reports a file with more than one name (a hard link).
func linked(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Nlink > 1
}

// socketPath is the unix socket postgres creates in the run directory.
func (s *Server) socketPath() string {
	return filepath.Join(s.runDir, ".s.PGSQL."+strconv.Itoa(s.port))
}

// DSN is a connection URL for the database named in Options.Database, over
// the unix socket, as the postgres superuser.
func (s *Server) DSN() string {
	return s.DSNFor(s.database)
}

// DSNFor is like DSN for another database of the same cluster.
func (s *Server) DSNFor(db string) string {
	u := url.URL{
		Scheme: "postgres",
		User:   url.User("postgres"),
		Path:   "/" + db,
		// Written by hand because url.Values encodes a space as '+', which
		// libpq and pgx do not decode.
		RawQuery: "host=" + queryEscape(s.runDir) + "&port=" + strconv.Itoa(s.port) + "&sslmode=disable",
	}
	return u.String()
}

// Supervise starts the cluster again whenever it is found not running,
// checking every period, until ctx ends: a postmaster killed or stopped
// behind the service's back (the OOM killer, pg_ctl stop by hand) comes
// back as it was, instead of the service answering 503 until someone
// restarts it. It returns once ctx is done; call Stop only after that.
func (s *Server) Supervise(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	var failing logging.Streak // starts that failed in a row
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.running() {
			s.setFailing(NotStarting{})
			continue
		}
		began := time.Now()
		if err := s.start(ctx, s.fsync, s.extra); err != nil {
			if ctx.Err() != nil {
				continue
			}
			n, log := failing.Fail()
			if log {
				s.logger.Error("postgresql is not running and does not start again", "error", err, "failures", n)
			}
			s.mu.Lock()
			if s.failing.Tries == 0 {
				s.failing.Since = began
			}
			s.failing.Tries, s.failing.Cause = n, causeOf(err)
			s.mu.Unlock()
			continue
		}
		s.setFailing(NotStarting{})
		s.logger.Warn("postgresql was not running; started it again",
			"duration_ms", time.Since(began).Milliseconds(), "failed_starts", failing.End())
	}
}

// NotStarting is what Supervise knows of a cluster it found not running
// and has failed to start again since, try after try.
type NotStarting struct {
	Since time.Time `json:"since"` // the first failed try
	Tries int       `json:"tries"` // failed tries in a row
	Cause string    `json:"cause"` // postgres's last FATAL or PANIC message, else pg_ctl's error's first line
}

// NotStarting returns the failed starts in a row of Supervise, and false
// when the cluster runs or was started again since: what serve's /readyz
// says beside "postgres":"unavailable", so that the operator reads there
// why and since when, not only in the log (docs/deploy.md).
func (s *Server) NotStarting() (NotStarting, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failing, s.failing.Tries > 0
}

// Public says it in one line for anyone (serve's /readyz): since when
// (UTC) and how many tries, not postgres's message, which names paths
// (the file it cannot parse or open, another process's lock file) and
// versions (a cluster of another major's): /readyz answers without a
// token and gives no path, version or dependency's message
// (docs/observability.md, "Health"). The log and the authenticated
// /v1/status have the message.
func (n NotStarting) Public() string {
	return fmt.Sprintf("the managed PostgreSQL is not running and has failed to start since %s (%d tries); why: postgres_not_starting on /v1/status, and the log",
		n.Since.UTC().Format(time.RFC3339), n.Tries)
}

func (s *Server) setFailing(f NotStarting) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing = f
}

// causeOf is the line of a failed start's error that says why: its
// last from postgres.log at level FATAL or PANIC (a line of the config
// it cannot parse, a data directory it may not use, a lock file held),
// else its first (pg_ctl's).
func causeOf(err error) string {
	lines := strings.Split(err.Error(), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		// From the level on: the line's prefix is a time and a pid.
		for _, level := range []string{"FATAL:", "PANIC:"} {
			if at := strings.Index(lines[i], level); at >= 0 {
				return strings.TrimSpace(lines[i][at:])
			}
		}
	}
	return strings.TrimSpace(lines[0])
}

// running reports whether the postmaster of postmaster.pid is alive.
func (s *Server) running() bool {
	b, err := os.ReadFile(filepath.Join(s.dataDir, "postmaster.pid"))
	if err != nil {
		return false
	}
	return s.postmasterAlive(pidOf(b))
}

// pidOf is the pid on postmaster.pid's first line, 0 when there is
// none.
func pidOf(pidFile []byte) int {
	line, _, _ := strings.Cut(string(pidFile), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// postmasterAlive reports whether pid is a live process working in the
// cluster's data directory, as its postmaster does (it chdirs there). A
// live pid alone is not enough: the pid of a postmaster that was killed
// (the OOM killer) is given to another process sooner or later, and
// the supervisor took that process for the postmaster, never started the
// cluster again and logged nothing while every request answered 503. A
// process whose directory may not be read is the postmaster when it is
// the data directory's owner's: another user's, to a serve not run as
// root (the cluster runs as serve's own user), is not; the cluster's,
// to a serve run as root without CAP_SYS_PTRACE (a unit's bounding set,
// a container's default set), is. Read as dead, that live cluster was
// started again every tick, postgres refusing, and Stop left it running.
func (s *Server) postmasterAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	proc := "/proc/" + strconv.Itoa(pid)
	dir, err := os.Stat(s.dataDir)
	if err != nil {
		return false
	}
	cwd, err := os.Stat(proc + "/cwd")
	if errors.Is(err, fs.ErrPermission) {
		// /proc/<pid> itself is the process's user's, to anyone.
		p, err := os.Stat(proc)
		return err == nil && ownerOf(p) >= 0 && ownerOf(p) == ownerOf(dir)
	}
	return err == nil && os.SameFile(cwd, dir)
}

// ownerOf is fi's owner's uid, -1 when fi does not say.
func ownerOf(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Uid)
	}
	return -1
}

// Stop shuts the cluster down with pg_ctl's fast mode (active sessions are
// rolled back) and waits for it, up to startTimeout, whether Start
// started or adopted it. Stopping a stopped cluster is not an error, nor
// one whose postmaster died.
//
// A cluster with a process stopped (SIGSTOP, a debugger, a frozen
// cgroup) cannot finish its shutdown until that process is continued:
// pg_ctl stop -w waited its whole 60 s for it, and serve's stop with it
// (65 – 76 s, hB12). Stop sends the request, which the postmaster takes
// whenever it runs again, and returns an error as soon as it has found a
// process of the cluster stopped for a second.
func (s *Server) Stop(ctx context.Context) error {
	pidFile := filepath.Join(s.dataDir, "postmaster.pid")
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	pid := pidOf(b)
	// A postmaster that died left its file: nothing to stop, where pg_ctl
	// stop failed (serve's stop logged an error), and signalled the pid
	// in it, another process's once the pid was reused.
	if err == nil && !s.postmasterAlive(pid) {
		return nil
	}
	began := time.Now()
	if out, err := s.run(ctx, "pg_ctl", "stop", "-D", s.dataDir, "-m", "fast", "-W"); err != nil {
		return fmt.Errorf("pgembed: stop postgresql in %s: %w\n%s%s", s.dataDir, err, out, s.logTail())
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var held time.Time // since when a process of the cluster was found stopped
	for tick := 0; ; tick++ {
		if _, err := os.Stat(pidFile); errors.Is(err, os.ErrNotExist) || pid > 0 && errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			s.logger.Info("postgresql stopped", "duration_ms", time.Since(began).Milliseconds())
			return nil
		}
		// A look at every process is taken every half second: a long
		// shutdown checkpoint is not a scan of /proc every tick.
		if tick%5 == 0 {
			switch stopped, state := scanStopped(pid); {
			case stopped == 0:
				held = time.Time{}
			case held.IsZero():
				held = time.Now()
			case time.Since(held) >= time.Second:
				return fmt.Errorf("pgembed: stop postgresql in %s: %w: process %d of the cluster (postmaster %d) is stopped (state %s: SIGSTOP, a debugger or a frozen cgroup); "+
					"it was sent the stop and shuts down once continued (kill -CONT %d)", s.dataDir, ErrStopHeld, stopped, pid, state, stopped)
			}
		}
		if time.Since(began) > startTimeout {
			return fmt.Errorf("pgembed: stop postgresql in %s: the server did not shut down within %s%s", s.dataDir, startTimeout, s.logTail())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgembed: stop postgresql in %s: %w", s.dataDir, ctx.Err())
		case <-t.C:
		}
	}
}

// ErrStopHeld is Stop's error for a cluster that cannot finish its
// shutdown because one of its processes is stopped.
var ErrStopHeld = errors.New("the shutdown is held")

// scanStopped is stoppedProcess, which a test counts.
var scanStopped = stoppedProcess

// stoppedProcess returns the first of postmaster and its children found
// stopped (state T or t in /proc/<pid>/stat) and that state, or 0.
func stoppedProcess(postmaster int) (int, string) {
	if postmaster <= 0 {
		return 0, ""
	}
	for _, pid := range append([]int{postmaster}, procfs.Children(postmaster)...) {
		if f := procfs.Fields(pid); f != nil && (f[0] == "T" || f[0] == "t") {
			return pid, f[0]
		}
	}
	return 0, ""
}

// queryEscape percent-encodes v for a libpq URI query, spaces included.
func queryEscape(v string) string {
	return strings.ReplaceAll(url.QueryEscape(v), "+", "%20")
}
