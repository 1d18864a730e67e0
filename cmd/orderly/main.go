// Command orderly runs commands on a fleet of hosts for remote clients,
// safely and in order. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

func main() {
	slacken() // first: one run again for the slack and the monitor
	keepSysmonAwake()
	nameAfterRunAgain() // execve through /proc/self/exe named it "exe"
	ctx, stop := signalContext(context.Background())
	defer stop()
	if err := run(ctx, os.Args, os.Environ(), os.Stdin, os.Stdout, os.Stderr); err != nil {
		var ee exitCodeError
		if errors.As(err, &ee) {
			os.Exit(int(ee))
		}
		// A server command ends with a line in its log format (one JSON
		// object with log.format json), then exits 1.
		var le *loggedError
		if errors.As(err, &le) {
			le.logger.Error("orderly stopped", "error", le.err)
			os.Exit(1)
		}
		// The message may quote the server's words, and through them a
		// runbook's, another principal's or a command's text.
		fmt.Fprintln(os.Stderr, "orderly:", printableText(err.Error()))
		os.Exit(1)
	}
}

// exitCodeError makes the process exit with that code and print nothing
// more, e.g. to pass on a remote command's exit code.
type exitCodeError int

func (e exitCodeError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// signalContext is parent until SIGINT or SIGTERM arrives, then canceled
// with the signal as its cause (stopSignal), as signal.NotifyContext
// does but with a cause a client command can read: one that stops
// waiting exits 128 + the signal's number (stoppedExit). A signal after
// the first is taken too, until stop: the command is winding down.
func signalContext(parent context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case s := <-ch:
			sig, _ := s.(syscall.Signal)
			cancel(stopSignal{sig})
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		cancel(nil)
	}
}

// stopSignal is the cause of signalContext's end.
type stopSignal struct{ sig syscall.Signal }

func (s stopSignal) Error() string { return s.sig.String() + " signal received" }

// Is makes the cause read as the cancel it is.
func (s stopSignal) Is(target error) bool { return target == context.Canceled }

// stoppedExit is the exit status of a client command that ctx's end
// stopped: 128 + the number of the signal that ended it, as the shell
// reports a command a signal ended (Ctrl-C 130, SIGTERM 143); 130 when
// no signal is known (an in-process caller's cancel). It was 130 for
// SIGTERM too, which read as a Ctrl-C.
func stoppedExit(ctx context.Context) exitCodeError {
	var s stopSignal
	if errors.As(context.Cause(ctx), &s) && s.sig > 0 {
		return exitCodeError(128 + int(s.sig))
	}
	return 130
}

// version is set at build time with -ldflags "-X main.version=…" (make
// build, the Dockerfile's VERSION). Read it through binaryVersion.
var version = "dev"

// binaryVersion is the version --version prints, the CLI's User-Agent
// carries and the API and each worker report (GET /v1/status, GET
// /v1/hosts): how an operator tells which hosts an upgrade has reached.
// A build without -ldflags says what Go recorded instead (versionOf).
func binaryVersion() string {
	info, _ := debug.ReadBuildInfo()
	return versionOf(version, info)
}

// versionOf is stamped when the build set it; otherwise the module version
// of a `go install …@vX`, or dev- and the commit Go stamped from the
// checkout it was built in (-dirty with uncommitted changes), so that two
// builds without a version do not both say "dev".
func versionOf(stamped string, info *debug.BuildInfo) string {
	if stamped != "dev" || info == nil {
		return stamped
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev string
	var modified bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return stamped
	}
	v := "dev-" + rev[:min(len(rev), 12)]
	if modified {
		v += "-dirty"
	}
	return v
}

// run is the whole program, with its environment passed in so tests can run
// it in-process.
func run(ctx context.Context, args, environ []string, stdin io.Reader, stdout, stderr io.Writer) error {
	a := &app{environ: environ, stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.rootCommand()
	root.SetArgs(args[1:])
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	var ee exitCodeError
	if err != nil && a.logger != nil && !errors.As(err, &ee) {
		return &loggedError{err: err, logger: a.logger}
	}
	return err
}
