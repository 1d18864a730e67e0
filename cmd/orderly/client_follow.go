package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/orderly-run/orderly/api/client"
)

// waitOrder follows one order to its end (client.Follow: live output over
// the event stream, or polling) and maps its outcome to the exit. A
// spinner shows on stderr while nothing has been printed, only on a
// terminal.
func (a *app) waitOrder(ctx context.Context, c *client.Client, ord *client.Order, asJSON, submitted bool) error {
	opts := client.FollowOptions{Stdout: a.stdout, Stderr: a.stderr}
	if asJSON {
		opts = client.FollowOptions{} // the final order is printed instead
	} else {
		opts.OnMissed = func(stream string, missed int64) {
			fmt.Fprintf(a.stderr, "orderly: order %s: %d bytes of %s were missed and the stored copy is truncated\n", ord.ID, missed, stream)
		}
		opts.OnInterrupted = func(stream string, written int64) {
			fmt.Fprintf(a.stderr, "\norderly: order %s: live %s was interrupted after %d bytes (the message bus lost some); the rest is written when it comes again, or from the stored copy when the order ends\n", ord.ID, stream, written)
		}
		opts.OnLiveShort = func(stream string, written int64, why client.LiveShort) {
			if why == client.LiveCapped {
				fmt.Fprintf(a.stderr, "\norderly: order %s: live %s stopped at the output cap after %d bytes (worker.max_output_bytes, stdout and stderr together; the message bus lost none of it); the rest is written from the stored copy\n", ord.ID, stream, written)
				return
			}
			fmt.Fprintf(a.stderr, "\norderly: order %s: live %s was interrupted after %d bytes (the message bus lost the rest); the rest is written from the stored copy\n", ord.ID, stream, written)
		}
		opts.OnRunAgain = func() {
			fmt.Fprintf(a.stderr, "\norderly: order %s runs again (its worker stopped and the order is idempotent): its output starts over\n", ord.ID)
		}
	}
	var sp *spinner
	if !asJSON && a.isTerminal(a.stderr) {
		sp = startSpinner(a.stderr, fmt.Sprintf("%s %s on %s", ord.ID, ord.Status, ord.Host))
		defer sp.stop()
		opts.OnStatus = func(s client.Status) { sp.set(fmt.Sprintf("%s %s on %s", ord.ID, s, ord.Host)) }
		opts.BeforeOutput = sp.stop
	}
	stopCheck := func() {}
	if !asJSON && ord.Status == client.StatusQueued {
		// `logs -f` too: it re-attaches to an order whose submit's wait
		// was stopped, often the one that sat queued for want of a worker.
		stopCheck = a.sayWhenNoWorker(ctx, c, ord, sp, &opts, noWorkerCheckAfter)
	}
	final, err := c.Follow(ctx, ord.ID.String(), opts)
	stopCheck()
	sp.stop()
	if err != nil {
		return a.waitFailed(ctx, ord, submitted, err)
	}
	if asJSON {
		if err := writeJSON(a.stdout, final.Raw); err != nil {
			return err
		}
	} else if final.DryRun {
		fmt.Fprintf(a.stderr, "dry run: %s, policy %s (matched: %s)\n", final.Status, final.Policy.Decision, strings.Join(final.Policy.Matched, ", "))
	}
	return exitOf(a.stderr, final)
}

// waitFailed is the end of a wait for ord (submitted by this command, or
// followed) that err ended: stopped (Ctrl-C), the order goes on and the
// exit is the signal's; else err, with the order's id when it was
// submitted.
func (a *app) waitFailed(ctx context.Context, ord *client.Order, submitted bool, err error) error {
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		verb := "stopped following"
		if submitted {
			verb = "stopped waiting"
		}
		fmt.Fprintf(a.stderr, "orderly: %s; order %s goes on (follow: orderly logs -f %s; stop: orderly cancel %s)\n",
			verb, ord.ID, ord.ID, ord.ID)
		return stoppedExit(ctx)
	}
	if submitted {
		// The order is recorded: without its id a user would submit
		// it again to find out what became of it.
		fmt.Fprintf(a.stderr, "orderly: order %s was submitted, but waiting for it failed (follow: orderly logs -f %s; stop: orderly cancel %s)\n",
			ord.ID, ord.ID, ord.ID)
	}
	return err
}

// noWorkerCheckAfter is how long a waited order may stay queued before
// `submit --wait` (or `logs -f`) asks whether its host has a worker at
// all.
var noWorkerCheckAfter = 2 * time.Second

// sayWhenNoWorker tells whoever waits for ord, once, when it is still
// queued after noWorkerCheckAfter on a host no worker serves (a typo of
// the host, a worker not started): the API accepts such an order, which
// waits for a worker, and `submit --wait` and `logs -f` waited in
// silence. It wraps opts.OnStatus to know the order started; the check
// is made after after (noWorkerCheckAfter, less what was waited
// already); the returned func ends it.
func (a *app) sayWhenNoWorker(ctx context.Context, c *client.Client, ord *client.Order, sp *spinner, opts *client.FollowOptions, after time.Duration) func() {
	var status atomic.Value
	status.Store(ord.Status)
	prev := opts.OnStatus
	opts.OnStatus = func(s client.Status) {
		status.Store(s)
		if prev != nil {
			prev(s)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-cctx.Done():
			return
		case <-time.After(after):
		}
		if status.Load() != client.StatusQueued {
			return
		}
		h, err := c.Host(cctx, ord.Host)
		if err != nil || h.Online || status.Load() != client.StatusQueued || cctx.Err() != nil {
			return
		}
		note := fmt.Sprintf("host %s has no worker online (%s): the order waits until one starts", ord.Host, lastSeenText(h))
		if sp != nil {
			sp.set(fmt.Sprintf("%s queued on %s: %s", ord.ID, ord.Host, note))
			return
		}
		fmt.Fprintf(a.stderr, "orderly: %s; Ctrl-C stops waiting and leaves it queued (stop it: orderly cancel %s)\n", note, ord.ID)
	}()
	return func() { cancel(); <-done }
}

// lastSeenText says when a host's worker was last seen, for a note that
// it has none online.
func lastSeenText(h *client.Host) string {
	if h.LastSeen == nil {
		return "never seen"
	}
	return "last seen " + h.LastSeen.Local().Format("2006-01-02 15:04:05")
}

// exitOf maps a finished order to the CLI's exit, like ssh does for a
// remote command: succeeded → nil (exit 0); failed with an exit code → that
// code; ended by a signal (failed, killed or timed_out) → 128+signal, after
// a note on stderr; any other outcome (timed_out or killed without a known
// signal, rejected, canceled, expired, interrupted, a failure to start) →
// an error, which main prints as "orderly: …" with exit status 1.
func exitOf(stderr io.Writer, o *client.Order) error {
	res := o.Result
	if res == nil {
		res = &client.Result{}
	}
	detail := ""
	if res.Error != nil && *res.Error != "" {
		detail = ": " + cellText(*res.Error)
	}
	switch o.Status {
	case client.StatusSucceeded:
		return nil
	case client.StatusFailed, client.StatusKilled, client.StatusTimedOut:
		if res.Signal != nil && *res.Signal != "" {
			if n := unix.SignalNum(*res.Signal); n != 0 {
				what := map[client.Status]string{client.StatusFailed: "ended by", client.StatusKilled: "killed with", client.StatusTimedOut: "timed out; ended by"}[o.Status]
				fmt.Fprintf(stderr, "orderly: order %s %s %s%s\n", o.ID, what, *res.Signal, detailIfNew(detail, o.Status))
				return exitCodeError(128 + int(n))
			}
		}
		if o.Status == client.StatusFailed && res.ExitCode != nil && *res.ExitCode != 0 {
			return exitCodeError(*res.ExitCode)
		}
	}
	return fmt.Errorf("order %s %s%s", o.ID, o.Status, detail)
}

// detailIfNew drops an error text that only repeats the status.
func detailIfNew(detail string, status client.Status) string {
	if status == client.StatusTimedOut && detail == ": timed out" {
		return ""
	}
	return detail
}
