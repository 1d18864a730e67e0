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
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
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
		fmt.Fprintln(os.Stderr, "orderly:", err)
		os.Exit(1)
	}
}

// exitCodeError makes the process exit with that code and print nothing
// more, e.g. to pass on a remote command's exit code.
type exitCodeError int

func (e exitCodeError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

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
