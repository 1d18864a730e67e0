package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/orderly-run/orderly/api/client"
)

// runbookCommand is `orderly runbook`: the runbooks of the API's
// runbooks.dir (docs/runbooks.md), listed, shown, validated, run, and
// their runs.
func (a *app) runbookCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "runbook", Short: "List, show, validate and run runbooks; list their runs (docs/runbooks.md)"}
	for _, c := range []*cobra.Command{a.runbookListCommand(), a.runbookShowCommand(), a.runbookValidateCommand(),
		a.runbookRunCommand(), a.runbookHistoryCommand()} {
		hintUnreachable(c)
		cmd.AddCommand(c)
	}
	return cmd
}

// runbookListCommand is `orderly runbook ls`.
func (a *app) runbookListCommand() *cobra.Command {
	var conn connFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the runbooks, with whether each can run",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client(cmd, &conn)
			if err != nil {
				return err
			}
			list, err := c.Runbooks(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeValue(a.stdout, map[string]any{"runbooks": list})
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "FILE\tVALID\tPROBLEMS")
			for _, rb := range list {
				fmt.Fprintf(tw, "%s\t%s\t%d\n", cellText(rb.File), yesNo(rb.Valid), len(rb.Problems))
			}
			return tw.Flush()
		},
	}
	conn.bind(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's answer as JSON")
	return cmd
}

// runbookShowCommand is `orderly runbook show NAME`.
func (a *app) runbookShowCommand() *cobra.Command {
	var conn connFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a runbook: its variables, inputs, claims, problems and script",
		Long: `Show the runbook NAME (a file of the API's runbooks.dir) as the API parsed it.
Its ETag is the tag run --if-match takes: the run is refused if the file
changed since.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd, &conn)
			if err != nil {
				return err
			}
			rb, etag, err := c.Runbook(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, rb.Raw)
			}
			return printRunbook(a.stdout, rb, etag)
		},
	}
	conn.bind(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's answer as JSON")
	return cmd
}

// printRunbook writes show's view of rb. Every text of it is the
// runbook file's, which the user may not have written: a character that
// does not print (an escape sequence, a carriage return, a bidi
// override) is written as shellQuote writes it (\x1b, \r, \u202e), so
// that it cannot rewrite or hide what the terminal shows. Newlines and
// tabs stay; --json has the exact text.
func printRunbook(w io.Writer, rb *client.RunbookDetail, etag string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	fmt.Fprintf(tw, "File:\t%s\n", printableText(rb.File))
	fmt.Fprintf(tw, "Name:\t%s\n", printableText(rb.Name))
	fmt.Fprintf(tw, "SHA256:\t%s\n", rb.SHA256)
	fmt.Fprintf(tw, "ETag:\t%s\n", printableText(etag))
	fmt.Fprintf(tw, "Valid:\t%s\n", yesNo(rb.Valid))
	if err := tw.Flush(); err != nil {
		return err
	}
	var b strings.Builder
	section := func(title string, lines []string) {
		if len(lines) == 0 {
			fmt.Fprintf(&b, "%s: none\n", title)
			return
		}
		fmt.Fprintf(&b, "%s:\n", title)
		for _, l := range lines {
			fmt.Fprintf(&b, "  %s\n", l)
		}
	}
	var env, inputs, claims, problems, warnings []string
	for _, v := range rb.Env {
		env = append(env, printableText(v.Name)+"\t"+printableText(v.Description))
	}
	for _, in := range rb.Inputs {
		inputs = append(inputs, printableText(in))
	}
	for _, c := range rb.Claims {
		claims = append(claims, printableText(c.Name+": "+strings.Join(c.Allowed, ", ")))
	}
	for _, p := range rb.Problems {
		problems = append(problems, printableText(p.Code+": "+p.Message))
	}
	for _, w := range rb.Warnings {
		warnings = append(warnings, printableText(w))
	}
	section("Environment", env)
	section("Inputs", inputs)
	section("Required claims", claims)
	section("Problems", problems)
	section("Warnings", warnings)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if _, err := fmt.Fprint(tw, b.String()); err != nil {
		return err
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// The script is not aligned: its tabs are its own (a <<- here
	// document needs them).
	script := printableText(rb.Script)
	if script != "" && !strings.HasSuffix(script, "\n") {
		script += "\n"
	}
	_, err := fmt.Fprintf(w, "--- script ---\n%s", script)
	return err
}

// printableText is s with every character that does not print, other
// than a newline or a tab, written as an escape (\r, \x1b, \u202e), as
// shellQuote writes them.
func printableText(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r != '\n' && r != '\t' && !unicode.IsPrint(r) }) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n' || r == '\t' || unicode.IsPrint(r):
			b.WriteRune(r)
		case r == '\r':
			b.WriteString(`\r`)
		default:
			writeCodeEscape(&b, r)
		}
	}
	return b.String()
}

// runbookRequestFlags are the body of validate and run.
type runbookRequestFlags struct {
	env     []string
	host    string
	timeout time.Duration
	runAs   string
}

func (f *runbookRequestFlags) bind(fs *pflag.FlagSet) {
	fs.StringArrayVarP(&f.env, "env", "e", nil, "variable K=V for env_vars (repeatable, each name once; K alone passes the local value)")
	fs.StringVar(&f.host, "host", "", "host to run on (default: the server's runbooks.host)")
	fs.DurationVar(&f.timeout, "timeout", 0, "kill the script after this long (e.g. 10m; default: the server's runbooks.timeout)")
	fs.StringVar(&f.runAs, "run-as", "", "Unix user to run as")
}

// request is the request body the flags make.
func (f *runbookRequestFlags) request(a *app) (client.RunbookRequest, error) {
	if f.timeout < 0 {
		return client.RunbookRequest{}, errors.New("--timeout must not be negative")
	}
	env, err := a.envFlags(f.env)
	if err != nil {
		return client.RunbookRequest{}, err
	}
	req := client.RunbookRequest{Host: f.host, TimeoutSeconds: f.timeout.Seconds(), RunAs: f.runAs}
	for k, v := range env {
		if req.EnvVars == nil {
			req.EnvVars = map[string]any{}
		}
		req.EnvVars[k] = v
	}
	return req, nil
}

// runbookRefusal is a refusal of validate or run as the CLI prints it:
// the API's words in the terms of --timeout (timeoutRefusal), and a 422
// with every problem the API listed, one a line with its code (the
// API's message is the first problem's alone).
func runbookRefusal(err error, timeout time.Duration) error {
	err = timeoutRefusal(err, timeout)
	problems := client.RunbookProblems(err)
	var e *client.Error
	if len(problems) == 0 || !errors.As(err, &e) {
		return err
	}
	file, _ := e.Details["file"].(string)
	return &problemsError{head: fmt.Sprintf("runbook %s cannot run (%s)", file, e.Code), err: err, problems: problems}
}

// problemsError is a refusal whose problems are listed after head.
type problemsError struct {
	head     string
	err      error
	problems []client.RunbookProblem
}

func (e *problemsError) Error() string {
	var b strings.Builder
	b.WriteString(e.head + ":")
	for _, p := range e.problems {
		fmt.Fprintf(&b, "\n  %s: %s", p.Code, p.Message)
	}
	return b.String()
}

func (e *problemsError) Unwrap() error { return e.err }

// runbookValidateCommand is `orderly runbook validate NAME`.
func (a *app) runbookValidateCommand() *cobra.Command {
	var conn connFlags
	var rf runbookRequestFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "validate NAME [--env K=V]... [--host H] [--timeout D] [--run-as U]",
		Short: "Judge a run of a runbook as run would, for you, and run nothing",
		Long: `Ask the API whether the runbook NAME would run with these variables and
options, for this token: it checks the Required Claims (forbidden), the text,
the input files and the variables (unprocessable, with every problem listed)
as run does, and runs nothing. Exits 0 when the run would be accepted.`,
		Example: "  orderly runbook validate RotateLogs.md -e KEEP_DAYS=7 -e LOG_TAG=weekly",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := rf.request(a)
			if err != nil {
				return err
			}
			c, err := a.client(cmd, &conn)
			if err != nil {
				return err
			}
			v, err := c.ValidateRunbook(cmd.Context(), args[0], req)
			if err != nil {
				return runbookRefusal(err, rf.timeout)
			}
			if asJSON {
				return writeJSON(a.stdout, v.Raw)
			}
			// The runbook's text, as show writes it: a warning quotes
			// its name.
			for _, w := range v.Warnings {
				fmt.Fprintf(a.stderr, "orderly: warning: %s\n", cellText(w))
			}
			_, err = fmt.Fprintf(a.stdout, "%s: valid\n", cellText(firstNonEmpty(v.File, args[0])))
			return err
		},
	}
	conn.bind(cmd)
	rf.bind(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's answer as JSON (a refusal is printed as without it)")
	return cmd
}

// waitFlag is --wait[=D]: wait for the run to end, for at most D when
// given.
type waitFlag struct {
	on  bool
	max time.Duration
}

func (w *waitFlag) String() string {
	switch {
	case !w.on:
		return "false"
	case w.max == 0:
		return "true"
	}
	return w.max.String()
}

// Type is "bool" for the help's sake: pflag then shows the flag as a
// switch, "--wait", and its usage says what --wait=D does.
func (w *waitFlag) Type() string { return "bool" }

func (w *waitFlag) Set(s string) error {
	switch s {
	case "true":
		*w = waitFlag{on: true}
		return nil
	case "false":
		*w = waitFlag{}
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return fmt.Errorf("want a positive duration (e.g. 5m), or none to wait until the run ends")
	}
	*w = waitFlag{on: true, max: d}
	return nil
}

type runbookRunOptions struct {
	conn        connFlags
	req         runbookRequestFlags
	wait        waitFlag
	follow      bool
	ifMatch     string
	ifUnchanged bool
	idemKey     string
	retryFor    time.Duration
	json        bool
}

// runbookRunCommand is `orderly runbook run NAME`.
func (a *app) runbookRunCommand() *cobra.Command {
	var o runbookRunOptions
	cmd := &cobra.Command{
		Use:   "run NAME [--env K=V]... [--host H] [--wait[=D] | --follow] [flags]",
		Short: "Run a runbook as an order of kind script",
		Long: `Run the runbook NAME with these variables on a host (by default the server's
runbooks.host). Without --wait or --follow it prints the order id.

--wait waits for the run to end (at most D with --wait=D) and then prints its
stored output, stdout to stdout and stderr to stderr; --follow streams the
output while the script runs. Either exits with the script's exit status, as
submit --wait does (docs/cli.md).`,
		Example: `  orderly runbook run RotateLogs.md --host web-3 -e KEEP_DAYS=7 -e LOG_TAG=weekly --follow
  orderly runbook run RotateLogs.md -e KEEP_DAYS=7 -e LOG_TAG=weekly --wait=10m --idempotency-key rotate-2026-12-04`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runRunbook(cmd, &o, args[0])
		},
	}
	o.conn.bind(cmd)
	fs := cmd.Flags()
	o.req.bind(fs)
	wf := fs.VarPF(&o.wait, "wait", "w", "wait for the run to end (--wait=D: at most D), print its output and exit with its exit status")
	wf.NoOptDefVal = "true"
	fs.BoolVarP(&o.follow, "follow", "f", false, "stream the output while the script runs and exit with its exit status")
	fs.StringVar(&o.ifMatch, "if-match", "", "run only while the runbook is still the one whose ETag this is (runbook show prints it)")
	fs.BoolVar(&o.ifUnchanged, "if-unchanged", false, "read the runbook first, refuse it here if it is not valid, and run only that version of it")
	fs.StringVar(&o.idemKey, "idempotency-key", "", "a retry with the same key returns the same run instead of running again")
	retryForFlag(fs, &o.retryFor)
	fs.BoolVar(&o.json, "json", false, "print the order (with --wait or --follow, the finished order) as JSON")
	cmd.MarkFlagsMutuallyExclusive("if-match", "if-unchanged")
	return cmd
}

func (a *app) runRunbook(cmd *cobra.Command, o *runbookRunOptions, name string) error {
	req, err := o.req.request(a)
	if err != nil {
		return err
	}
	c, err := a.client(cmd, &o.conn)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	opts := client.SubmitOptions{IdempotencyKey: o.idemKey, IfMatch: o.ifMatch}
	if o.ifUnchanged {
		rb, etag, err := c.Runbook(ctx, name)
		if err != nil {
			return err
		}
		if !rb.Valid {
			return &problemsError{head: fmt.Sprintf("runbook %s is not valid; nothing was run", rb.File), problems: rb.Problems}
		}
		opts.IfMatch = etag
	}
	waitCtx, cancel := ctx, context.CancelFunc(func() {})
	if o.wait.max > 0 {
		waitCtx, cancel = context.WithTimeout(ctx, o.wait.max)
	}
	defer cancel()
	if o.wait.on && !o.follow {
		// The API holds its answer for at most noWorkerCheckAfter: a run
		// still queued then is followed with submit --wait's check for a
		// host without a worker, which a longer hold would keep silent.
		opts.Wait = noWorkerCheckAfter
		if o.wait.max > 0 {
			opts.Wait = min(o.wait.max, noWorkerCheckAfter)
		}
	}
	sent := time.Now()
	var ord *client.Order
	tries := 0
	err = a.sendRetrying(ctx, o.retryFor, o.idemKey != "", func() (err error) {
		tries++
		ord, err = c.ExecuteRunbook(ctx, name, req, opts)
		return err
	})
	if err != nil {
		return runbookRefusal(err, o.req.timeout)
	}
	if tries == 1 {
		a.noteReplayed(o.idemKey, ord, nil)
	}
	switch {
	case o.follow:
		err := a.waitOrder(waitCtx, c, ord, o.json, true)
		return a.waitOver(ctx, waitCtx, ord, o.wait.max, err)
	case o.wait.on:
		final := ord
		if !ord.Status.Terminal() {
			var fopts client.FollowOptions
			stopCheck := func() {}
			if !o.json && ord.Status == client.StatusQueued {
				stopCheck = a.sayWhenNoWorker(waitCtx, c, ord, nil, &fopts, max(0, noWorkerCheckAfter-time.Since(sent)))
			}
			final, err = c.Follow(waitCtx, ord.ID.String(), fopts)
			stopCheck()
			if err != nil {
				return a.waitOver(ctx, waitCtx, ord, o.wait.max, a.waitFailed(waitCtx, ord, true, err))
			}
		}
		if o.json {
			if err := writeJSON(a.stdout, final.Raw); err != nil {
				return err
			}
		} else if err := client.WriteOutput(final, a.stdout, a.stderr); err != nil {
			return err
		}
		return exitOf(a.stderr, final)
	case o.json:
		return writeJSON(a.stdout, ord.Raw)
	}
	_, err = fmt.Fprintln(a.stdout, ord.ID)
	return err
}

// waitOver words the end of a --wait=D that ended before the run (after
// waitFailed said that it goes on and how to follow it): the exit is 1,
// as a Ctrl-C's 130 would read as one.
func (a *app) waitOver(ctx, waitCtx context.Context, ord *client.Order, max time.Duration, err error) error {
	if err == nil || ctx.Err() != nil || !errors.Is(waitCtx.Err(), context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("order %s has not finished within --wait=%s", ord.ID, max)
}

// runbookHistoryCommand is `orderly runbook history NAME`.
func (a *app) runbookHistoryCommand() *cobra.Command {
	var conn connFlags
	var limit int
	var cursor string
	var all, asJSON bool
	cmd := &cobra.Command{
		Use:   "history NAME [--limit N] [--all | --cursor C]",
		Short: "List a runbook's runs, newest first, refused ones included",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("limit") && (limit < 1 || limit > 1000) {
				return fmt.Errorf("--limit must be 1-1000, not %d", limit)
			}
			c, err := a.client(cmd, &conn)
			if err != nil {
				return err
			}
			opts := client.RunbookHistoryOptions{Limit: limit, Cursor: cursor, WithoutOutputs: !asJSON}
			var orders []client.Order
			next := ""
			for {
				page, err := c.RunbookHistory(cmd.Context(), args[0], opts)
				if err != nil {
					return err
				}
				if asJSON && !all {
					return writeJSON(a.stdout, page.Raw)
				}
				orders = append(orders, page.Orders...)
				next = ""
				if page.NextCursor != nil {
					next = *page.NextCursor
				}
				if !all || next == "" {
					break
				}
				opts.Cursor = next
			}
			if asJSON {
				return writeOrdersJSON(a.stdout, orders)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tHOST\tSTATUS\tEXIT\tSUBMITTED\tPRINCIPAL\tVERSION")
			for _, ord := range orders {
				version := ord.RunbookSHA256[:min(12, len(ord.RunbookSHA256))]
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ord.ID, cellText(ord.Host), ord.Status, exitText(&ord),
					localTime(&ord.SubmittedAt), cellText(ord.Principal), firstNonEmpty(version, "-"))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if next != "" {
				fmt.Fprintf(a.stderr, "(more runs: --all lists every page; the next one: --cursor %s)\n", next)
			}
			return nil
		},
	}
	conn.bind(cmd)
	cmd.Flags().IntVar(&limit, "limit", 0, "runs per page (1-1000, default the server's: 50)")
	cmd.Flags().StringVar(&cursor, "cursor", "", "start at this page (the note on stderr after a page names the next one)")
	cmd.Flags().BoolVar(&all, "all", false, "follow next_cursor through every page")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's answer as JSON (with --all, every page's runs in one list)")
	return cmd
}
