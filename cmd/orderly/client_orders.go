package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/orderly-run/orderly/api/client"
)

func (a *app) getCommand() *cobra.Command {
	var conn connFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "get ORDER-ID",
		Short:   "Show an order: status, host, exit code, duration and output",
		Example: "  orderly get 0193a5c4-8a9e-7c1e-9f3a-2b6d4e8f0a1c\n  orderly get --json 0193a5c4-8a9e-7c1e-9f3a-2b6d4e8f0a1c | jq .result.exit_code",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd, &conn)
			if err != nil {
				return err
			}
			o, err := c.Get(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, o.Raw)
			}
			return printOrder(a.stdout, o)
		},
	}
	conn.bind(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the order as the API returns it")
	return cmd
}

// printOrder is get's human summary.
func printOrder(w io.Writer, o *client.Order) error {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("ID", o.ID.String())
	if o.BatchID != nil {
		row("Batch", o.BatchID.String())
	}
	row("Host", cellText(o.Host))
	status := string(o.Status)
	if o.Result != nil && (o.Result.ExitCode != nil || o.Result.Signal != nil) {
		status += " (exit " + exitText(o) + ")"
	}
	row("Status", status)
	row("Command", commandLine(o))
	if o.RunAs != "" {
		row("Run as", cellText(o.RunAs))
	}
	if o.DryRun {
		row("Dry run", "yes")
	}
	row("Principal", cellText(o.Principal))
	row("Policy", cellText(fmt.Sprintf("%s (%s)", o.Policy.Decision, strings.Join(o.Policy.Matched, ", "))))
	row("Submitted", localTime(&o.SubmittedAt))
	row("Started", localTime(o.StartedAt))
	row("Finished", localTime(o.FinishedAt))
	if o.Attempt > 1 {
		row("Attempt", strconv.Itoa(o.Attempt))
	}
	// An order that never started (canceled or expired while queued,
	// refused before it was queued, or rejected by the worker's host
	// policy, which claims it and runs nothing) ran for no time and wrote
	// nothing: a duration and empty streams would say it ran. One
	// interrupted ran for a time nobody recorded: its worker was lost, and
	// "0s" would say it ran for none. Its output is what reached the live
	// stream before (its successor stores that): shown, but as a part.
	ran := o.StartedAt != nil && o.Status != client.StatusRejected
	interrupted := o.Status == client.StatusInterrupted
	recorded := ran && !interrupted
	if c := o.Cancel; c != nil {
		who := "by " + cellText(c.Actor) + " at " + localTime(&c.RequestedAt)
		if ran {
			who += " (" + c.Signal + ")" // the signal a queued order never got
		}
		row("Cancel", who)
	}
	if r := o.Result; r != nil {
		if recorded {
			row("Duration", (time.Duration(r.DurationMS) * time.Millisecond).String())
		} else if ran {
			row("Duration", "unknown")
		}
		if r.Error != nil && *r.Error != "" {
			row("Error", cellText(*r.Error))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if o.Result == nil || !recorded && !interrupted {
		return nil
	}
	for _, s := range []struct {
		name string
		s    client.Stream
	}{{"stdout", o.Result.Stdout}, {"stderr", o.Result.Stderr}} {
		note := fmt.Sprintf("%d bytes", s.s.Bytes)
		if interrupted {
			// Bytes is the size of what was kept; how much the command
			// wrote after the worker was lost nobody knows.
			note = fmt.Sprintf("%d bytes kept before its worker was lost; the rest unknown", s.s.Bytes)
		}
		if s.s.Truncated {
			note += ", truncated"
		}
		fmt.Fprintf(w, "--- %s (%s) ---\n", s.name, note)
		b, err := s.s.Decode()
		if err != nil {
			return fmt.Errorf("order %s: %w", o.ID, err)
		}
		if !utf8.Valid(b) {
			fmt.Fprintf(w, "(binary output; `orderly logs %s` writes it as is)\n", o.ID)
			continue
		}
		// The output is shown as text here (`orderly logs` writes the
		// bytes): an escape sequence the command printed would act on
		// the reader's terminal.
		b = []byte(printableText(string(b)))
		w.Write(b)
		if len(b) > 0 && b[len(b)-1] != '\n' {
			fmt.Fprintln(w)
		}
	}
	return nil
}

func (a *app) logsCommand() *cobra.Command {
	var conn connFlags
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs [-f] ORDER-ID",
		Short: "Print an order's output (stdout to stdout, stderr to stderr)",
		Long: `Print an order's stdout and stderr as raw bytes.

Without -f it prints the stored output of a finished order. With -f it follows
a queued or running order live until it finishes, and then exits with the
order's exit code, like submit --wait.`,
		Example: "  orderly logs 0193a5c4-8a9e-7c1e-9f3a-2b6d4e8f0a1c > out.txt\n  orderly logs -f 0193a5c4-8a9e-7c1e-9f3a-2b6d4e8f0a1c",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd, &conn)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			o, err := c.Get(ctx, args[0])
			if err != nil {
				return err
			}
			if follow && !o.Status.Terminal() {
				return a.waitOrder(ctx, c, o, false, false)
			}
			if !o.Status.Terminal() {
				fmt.Fprintf(a.stderr, "orderly: order %s is %s; its output is stored when it finishes (orderly logs -f %s follows it)\n", o.ID, o.Status, o.ID)
				return nil
			}
			if err := client.WriteOutput(o, a.stdout, a.stderr); err != nil {
				return err
			}
			if follow {
				return exitOf(a.stderr, o)
			}
			if o.Status == client.StatusInterrupted {
				// What was printed is what reached the live stream before
				// the worker was lost (nothing after a NATS restart): on
				// its own it would read as the command's whole output.
				fmt.Fprintf(a.stderr, "orderly: order %s was interrupted: its worker was lost while it ran; %s\n", o.ID, interruptedOutput(o))
			}
			return nil
		},
	}
	conn.bind(cmd)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow the output live until the order finishes, then exit with its exit code")
	return cmd
}

// interruptedOutput says what of an interrupted order's output was kept:
// what reached the live stream before its worker was lost, which its
// successor stored.
func interruptedOutput(o *client.Order) string {
	if o.Result == nil || o.Result.Stdout.Bytes == 0 && o.Result.Stderr.Bytes == 0 {
		return "none of its output was kept"
	}
	return fmt.Sprintf("only what it printed before that was kept (%d bytes of stdout, %d of stderr), not what came after",
		o.Result.Stdout.Bytes, o.Result.Stderr.Bytes)
}

type lsOptions struct {
	conn        connFlags
	host        string
	status      []string
	principal   string
	batch       string
	correlation string
	since       string
	until       string
	limit       int
	all         bool
	json        bool
}

func (a *app) lsCommand() *cobra.Command {
	var o lsOptions
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List orders, newest first",
		Example: "  orderly ls --host web-3 --status failed,timed_out --since 24h\n  orderly ls --batch 0193a5c4-8a9e-7c1e-9f3a-2b6d4e8f0a1c --all --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.ls(cmd, &o)
		},
	}
	o.conn.bind(cmd)
	fs := cmd.Flags()
	fs.StringVar(&o.host, "host", "", "only orders for this host")
	fs.StringSliceVar(&o.status, "status", nil, "only orders with these statuses (comma-separated or repeated)")
	fs.StringVar(&o.principal, "principal", "", "only orders submitted by this principal")
	fs.StringVar(&o.batch, "batch", "", "only the orders of this fan-out batch")
	fs.StringVar(&o.correlation, "correlation", "", "only the orders recorded with this correlation id (--correlation-id, X-Correlation-Id)")
	fs.StringVar(&o.since, "since", "", "only orders submitted since this time: RFC 3339 or a duration ago (e.g. 2h)")
	fs.StringVar(&o.until, "until", "", "only orders submitted before this time: RFC 3339 or a duration ago")
	fs.IntVar(&o.limit, "limit", 0, "orders per page (1-1000, default the server's: 50)")
	fs.BoolVar(&o.all, "all", false, "follow next_cursor through every page")
	fs.BoolVar(&o.json, "json", false, "print the API's answer as JSON (with --all, every page's orders in one list)")
	return cmd
}

func (a *app) ls(cmd *cobra.Command, o *lsOptions) error {
	if cmd.Flags().Changed("limit") && (o.limit < 1 || o.limit > 1000) {
		return fmt.Errorf("--limit must be 1-1000, not %d", o.limit)
	}
	// The table shows no output: it asks for none. --json prints the
	// API's answer as it always has, outputs included.
	opts := client.ListOptions{Host: o.host, Principal: o.principal, Batch: o.batch, Correlation: o.correlation, Limit: o.limit,
		WithoutOutputs: !o.json}
	for _, st := range o.status {
		for _, v := range strings.Split(st, ",") {
			opts.Status = append(opts.Status, client.Status(v))
		}
	}
	now := time.Now()
	for _, t := range []struct {
		name, v string
		dst     *time.Time
	}{{"since", o.since, &opts.Since}, {"until", o.until, &opts.Until}} {
		if t.v == "" {
			continue
		}
		ts, err := parseWhen(t.v, now)
		if err != nil {
			return fmt.Errorf("--%s: %w", t.name, err)
		}
		*t.dst = ts
	}
	if !opts.Since.IsZero() && !opts.Until.IsZero() && !opts.Since.Before(opts.Until) {
		return fmt.Errorf("--since %s is not before --until %s: no order can match", o.since, o.until)
	}
	c, err := a.client(cmd, &o.conn)
	if err != nil {
		return err
	}
	if o.json && !o.all {
		page, err := c.List(cmd.Context(), opts)
		if err != nil {
			return err
		}
		return writeJSON(a.stdout, page.Raw)
	}
	var orders []client.Order
	more := false
	if o.all {
		for ord, err := range c.Orders(cmd.Context(), opts) {
			if err != nil {
				return err
			}
			orders = append(orders, *ord)
		}
	} else {
		page, err := c.List(cmd.Context(), opts)
		if err != nil {
			return err
		}
		orders, more = page.Orders, page.NextCursor != nil && *page.NextCursor != ""
	}
	if o.json {
		return writeOrdersJSON(a.stdout, orders)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tHOST\tSTATUS\tEXIT\tSUBMITTED\tCOMMAND")
	for _, ord := range orders {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", ord.ID, cellText(ord.Host), ord.Status, exitText(&ord),
			localTime(&ord.SubmittedAt), truncate(commandLine(&ord), 60))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if more {
		fmt.Fprintln(a.stderr, "(more orders: --all lists every page)")
	}
	return nil
}

// parseWhen reads an RFC 3339 time or a duration before now ("90m").
func parseWhen(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2025-01-31T15:04:05Z) nor a duration ago (2h)", v)
}

func (a *app) cancelCommand() *cobra.Command {
	var conn connFlags
	var signal string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "cancel ORDER-ID",
		Short: "Cancel a queued order, or signal a running one (SIGKILL follows after the grace period)",
		Example: "  orderly cancel 0193a5c4-8a9e-7c1e-9f3a-2b6d4e8f0a1c\n" +
			"  orderly cancel --signal INT 0193a5c4-8a9e-7c1e-9f3a-2b6d4e8f0a1c",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sig, err := signalName(signal)
			if err != nil {
				return err
			}
			c, err := a.client(cmd, &conn)
			if err != nil {
				return err
			}
			o, err := c.Cancel(cmd.Context(), args[0], sig)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, o.Raw)
			}
			switch {
			case o.Status == client.StatusCanceled:
				_, err = fmt.Fprintf(a.stdout, "order %s canceled before it started\n", o.ID)
			case o.Cancel != nil && o.Cancel.HostOnline != nil && !*o.Cancel.HostOnline:
				// The API only wakes the host's worker; with none, saying
				// "sent" told of a signal nobody sends.
				_, err = fmt.Fprintf(a.stdout, "cancel of order %s recorded (%s), but no worker serves %s now: nothing signals the order until a worker for %s starts and settles it\n"+
					"if %s is gone for good: orderly hosts --forget %s --abandon\n", o.ID, sig, o.Host, o.Host, o.Host, o.Host)
			default:
				then := " (SIGKILL follows after the grace period)"
				if sig == "SIGKILL" {
					then = ""
				}
				_, err = fmt.Fprintf(a.stdout, "sent %s to order %s on %s%s\n", sig, o.ID, o.Host, then)
			}
			return err
		},
	}
	conn.bind(cmd)
	cmd.Flags().StringVarP(&signal, "signal", "s", "SIGTERM", "signal for a running order: SIGHUP, SIGINT, SIGTERM, SIGKILL, SIGUSR1, SIGUSR2 (TERM or 15 work too)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the order as the API returns it")
	return cmd
}

// signalName accepts SIGTERM, TERM, term or 15 and returns "SIGTERM". The
// API decides which signals it allows.
func signalName(s string) (string, error) {
	s = strings.ToUpper(strings.TrimSpace(s))
	if n, err := strconv.Atoi(s); err == nil {
		if name := unix.SignalName(syscall.Signal(n)); name != "" {
			return name, nil
		}
		return "", fmt.Errorf("--signal %s: no such signal", s)
	}
	if !strings.HasPrefix(s, "SIG") {
		s = "SIG" + s
	}
	if unix.SignalNum(s) == 0 {
		return "", fmt.Errorf("--signal %s: no such signal", s)
	}
	return s, nil
}

// writeOrdersJSON writes every page's orders as the API sent them, in
// one list, as one page without a next one (ls --all --json).
func writeOrdersJSON(w io.Writer, orders []client.Order) error {
	list := make([]json.RawMessage, len(orders))
	for i := range orders {
		list[i] = orders[i].Raw
	}
	return writeValue(w, map[string]any{"orders": list, "next_cursor": nil})
}
