package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/orderly-run/orderly/api/client"
)

type submitOptions struct {
	conn        connFlags
	host        string
	hosts       []string
	wait        bool
	timeout     time.Duration
	expiresIn   time.Duration
	runAs       string
	env         []string
	stdin       string
	stdinFile   string
	maxStdin    int64
	encode      string
	dryRun      bool
	idemKey     string
	correlation string
	retryFor    time.Duration
	json        bool
}

func (a *app) submitCommand() *cobra.Command {
	var o submitOptions
	cmd := &cobra.Command{
		// Both forms, as docs/cli.md shows them: --host alone in the usage
		// line read as the only way to name where to run.
		Use:   "submit (--host HOST | --hosts HOST,...) [flags] [--] COMMAND [ARG...]",
		Short: "Submit an order: run a command on a host (or, with --hosts, on many)",
		Long: `Submit an order to run COMMAND with its arguments on a host.

Without --wait it prints the order id (or, with --hosts, the batch id and one
order per host). With --wait it streams the command's stdout and stderr as it
runs and exits with the remote exit code; see docs/cli.md for the exit codes
of orders that did not simply exit.

Flags must come before COMMAND; everything from COMMAND on is passed to it.`,
		Example: `  orderly submit --host web-3 --wait -- uname -a
  orderly submit --host web-3 --wait --timeout 10m --run-as deploy -- /opt/app/migrate --yes
  tar cz ./site | orderly submit --host web-3 --wait --stdin - -- tar xz -C /srv/site
  orderly submit --hosts 'web-*' --wait -- systemctl is-active nginx`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.submit(cmd, &o, args)
		},
	}
	cmd.Flags().SetInterspersed(false)
	o.conn.bind(cmd)
	fs := cmd.Flags()
	fs.StringVar(&o.host, "host", "", "host to run on")
	fs.StringSliceVar(&o.hosts, "hosts", nil, "fan out: hosts or globs over known hosts (comma-separated or repeated), one order each")
	submitWaitFlag(fs, &o.wait, "to bound the run, give --timeout (such as --timeout 10m)")
	fs.DurationVar(&o.timeout, "timeout", 0, "kill the command after this long (e.g. 30s, 10m; default: the server's)")
	fs.DurationVar(&o.expiresIn, "expires-in", 0, "do not start the order if it has not started within this long (e.g. 1h)")
	fs.StringVar(&o.runAs, "run-as", "", "Unix user to run as")
	fs.StringArrayVarP(&o.env, "env", "e", nil, "environment variable K=V for the command (repeatable, each name once; K alone passes the local value)")
	fs.StringVar(&o.stdin, "stdin", "", `"-" sends this process's standard input to the command`)
	fs.StringVar(&o.stdinFile, "stdin-file", "", "send this file to the command's standard input")
	fs.Int64Var(&o.maxStdin, "max-stdin-bytes", 0, "refuse a stdin larger than this before sending it (env ORDERLY_MAX_STDIN_BYTES; default: the server's default limits.max_stdin_bytes, 524288)")
	fs.StringVar(&o.encode, "encode", "", "encoding of stdin and output on the wire: base64 or base85 (output is printed decoded)")
	fs.BoolVar(&o.dryRun, "dry-run", false, "check authorization and host policy without running anything")
	fs.StringVar(&o.idemKey, "idempotency-key", "", "a retry with the same key returns the same order instead of running again")
	correlationFlag(fs, &o.correlation)
	retryForFlag(fs, &o.retryFor)
	fs.BoolVar(&o.json, "json", false, "print the order (with --wait, the finished order) as JSON")
	cmd.MarkFlagsMutuallyExclusive("host", "hosts")
	cmd.MarkFlagsOneRequired("host", "hosts")
	cmd.MarkFlagsMutuallyExclusive("stdin", "stdin-file")
	return cmd
}

func (a *app) submit(cmd *cobra.Command, o *submitOptions, args []string) error {
	body, err := a.submitBody(o, args)
	if err != nil {
		return err
	}
	c, err := a.client(cmd, &o.conn)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	var sub *client.Submission
	tries := 0
	err = a.sendRetrying(ctx, o.retryFor, o.idemKey != "", func() (err error) {
		tries++
		sub, err = c.Submit(ctx, *body, client.SubmitOptions{IdempotencyKey: o.idemKey, CorrelationID: o.correlation})
		return err
	})
	if err != nil {
		return timeoutRefusal(err, o.timeout)
	}
	if tries == 1 {
		a.noteReplayed(o.idemKey, sub.Order, sub.Batch)
	}
	if sub.Batch != nil {
		return a.submitted(ctx, c, o, sub.Batch)
	}
	if !o.wait {
		if o.json {
			return writeJSON(a.stdout, sub.Raw)
		}
		_, err := fmt.Fprintln(a.stdout, sub.Order.ID)
		return err
	}
	return a.waitOrder(ctx, c, sub.Order, o.json, true)
}

// sendRetrying calls send, and calls it again for up to retryFor while
// that cannot run anything twice: always when the connection to the API
// could not be made (the request never left), and, when the submission
// carries an idempotency key (keyed), after any failure of the API's side
// too (a dropped answer, a 503: the order may be recorded, and the key
// makes the retry answer with it). An API that restarts (a deploy, a
// crash) then costs the caller nothing.
func (a *app) sendRetrying(ctx context.Context, retryFor time.Duration, keyed bool, send func() error) error {
	deadline := time.Now().Add(retryFor)
	wait := 250 * time.Millisecond
	for told := false; ; {
		err := send()
		if err != nil && ctx.Err() != nil {
			// Stopped (Ctrl-C) while the submission was out: the API
			// may have recorded it, and "context canceled" alone had
			// people submit it again, to run twice.
			hint := "orderly ls --since 10m shows it"
			if keyed {
				hint = "sending it again with the same --idempotency-key answers with it and runs nothing twice"
			}
			fmt.Fprintf(a.stderr, "orderly: stopped before the API answered: the order may be recorded and run all the same (%s)\n", hint)
			return stoppedExit(ctx)
		}
		if err == nil || time.Now().Add(wait).After(deadline) {
			return withOrderID(err)
		}
		if !notSent(err) && !(keyed && client.Temporary(err)) {
			return withOrderID(err)
		}
		if !told {
			fmt.Fprintf(a.stderr, "orderly: %v; trying again for up to %s\n", err, retryFor)
			told = true
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// noteReplayed says on stderr that the API answered a keyed submission
// (an order, or a fan-out's batch) with what its key recorded before: a
// user who ran the command again expects it to run again, and without a
// word would read a finished order's output as this run's. Called only
// when the command's first try was so answered: after its own retry
// (--retry-for) the recorded order is most likely that first try's,
// whose answer was lost, and the note would read as "this did not run".
func (a *app) noteReplayed(key string, ord *client.Order, batch *client.Batch) {
	switch {
	case ord != nil && ord.Replayed:
		fmt.Fprintf(a.stderr, "orderly: --idempotency-key %q was used before for this request: this is the order it recorded (%s, submitted %s); nothing new runs\n",
			key, ord.ID, ord.SubmittedAt.UTC().Format(time.RFC3339))
	case batch != nil && len(batch.Replayed) == len(batch.Orders) && len(batch.Orders) > 0:
		fmt.Fprintf(a.stderr, "orderly: --idempotency-key %q was used before for this request: these are the orders it recorded (batch %s); nothing new runs\n",
			key, batch.BatchID)
	case batch != nil && len(batch.Replayed) > 0:
		var hosts []string
		for _, o := range batch.Orders {
			if o.Replayed {
				hosts = append(hosts, o.Host)
			}
		}
		fmt.Fprintf(a.stderr, "orderly: --idempotency-key %q was used before for this request: on %s the orders are the ones it recorded, and run nothing new; %d other host(s) got a new order\n",
			key, strings.Join(hosts, ", "), len(batch.Orders)-len(hosts))
	}
}

// withOrderID adds to a refusal the order it names in details.order_id:
// a 503 whose order may be recorded ("look it up by id", "it will be
// queued automatically") says which order only there, and main prints
// the message alone.
func withOrderID(err error) error {
	var e *client.Error
	if !errors.As(err, &e) {
		return err
	}
	if id, ok := e.Details["order_id"].(string); ok && id != "" {
		return fmt.Errorf("%w; order %s", err, id)
	}
	return err
}

// timeoutRefusal words the API's refusal of timeout_seconds, a field the
// user never wrote, in the terms of --timeout, with the server's maximum
// as a duration: "timeout_seconds is above the maximum of 86400" did not
// say which flag or what to give.
func timeoutRefusal(err error, timeout time.Duration) error {
	var e *client.Error
	if !errors.As(err, &e) || e.Details["field"] != "timeout_seconds" {
		return err
	}
	r := *e
	r.Message = fmt.Sprintf("--timeout %s is refused: %s", timeout, e.Message)
	if secs, ok := e.Details["maximum_seconds"].(float64); ok {
		r.Message = fmt.Sprintf("--timeout %s is above the server's maximum of %s", timeout, time.Duration(secs*float64(time.Second)))
	}
	return &r
}

// retryForFlag adds --retry-for to fs, refusing a negative duration when
// the flags are parsed.
// correlationFlag adds --correlation-id to fs: sent as X-Correlation-Id,
// the id the order is recorded with and found by (ls --correlation).
func correlationFlag(fs *pflag.FlagSet, s *string) {
	fs.StringVar(s, "correlation-id", "", "record the order with this correlation id (X-Correlation-Id), to find it by later")
}

func retryForFlag(fs *pflag.FlagSet, d *time.Duration) {
	*d = 10 * time.Second
	fs.Var((*retryForValue)(d), "retry-for",
		"send the submission again for up to this long while the API cannot be reached (with --idempotency-key, also after a dropped answer or a 503); 0 never")
}

// submitWaitFlag adds --wait (-w) to fs: a bool, whose refusal of a
// value says what --wait is, then bound (what limits the run instead).
// runbook run's --wait takes a duration (--wait=10m), and the same
// spelling here answered with strconv's `parsing "10m": invalid syntax`.
func submitWaitFlag(fs *pflag.FlagSet, wait *bool, bound string) {
	f := fs.VarPF(&waitValue{wait: wait, bound: bound}, "wait", "w", "stream the output and exit with the remote exit code")
	f.NoOptDefVal = "true"
}

type waitValue struct {
	wait  *bool
	bound string
}

func (v *waitValue) String() string   { return strconv.FormatBool(v.wait != nil && *v.wait) }
func (v *waitValue) Type() string     { return "bool" }
func (v *waitValue) IsBoolFlag() bool { return true }
func (v *waitValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("--wait takes no value: it waits until the order ends; %s", v.bound)
	}
	*v.wait = b
	return nil
}

type retryForValue time.Duration

func (v *retryForValue) String() string { return time.Duration(*v).String() }
func (v *retryForValue) Type() string   { return "duration" }
func (v *retryForValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if d < 0 {
		return fmt.Errorf("must not be negative (0: send once)")
	}
	*v = retryForValue(d)
	return nil
}

// notSent reports a failure to connect to the API: the request never
// left, so sending it again cannot record anything twice.
func notSent(err error) bool {
	var te *client.TransportError
	var op *net.OpError
	return errors.As(err, &te) && errors.As(err, &op) && op.Op == "dial"
}

// submitBody turns the flags into the request body. Fields the flags do
// not set stay zero, which the API takes as its defaults.
func (a *app) submitBody(o *submitOptions, args []string) (*client.SubmitRequest, error) {
	if o.hosts != nil && len(o.hosts) == 0 {
		// --hosts "" (a variable that expanded to nothing): the body
		// would leave hosts out and the API refuse a host never given.
		return nil, errors.New("--hosts is empty: name at least one host or glob")
	}
	b := &client.SubmitRequest{Host: o.host, Hosts: o.hosts, Command: args[0], Args: args[1:], RunAs: o.runAs, DryRun: o.dryRun}
	if b.Args == nil {
		b.Args = []string{}
	}
	if o.timeout < 0 || o.expiresIn < 0 {
		return nil, errors.New("--timeout and --expires-in must not be negative")
	}
	b.TimeoutSeconds = o.timeout.Seconds()
	b.ExpiresInSeconds = o.expiresIn.Seconds()
	env, err := a.envFlags(o.env)
	if err != nil {
		return nil, err
	}
	b.Env = env
	switch o.encode {
	case "":
	case "base64", "base85":
		enc := o.encode
		b.Stdout = &client.StreamOut{Encode: &enc}
		b.Stderr = &client.StreamOut{Encode: &enc}
	default:
		return nil, fmt.Errorf("--encode %q: want base64 or base85", o.encode)
	}
	var in []byte
	switch {
	case o.stdin != "" && o.stdin != "-":
		return nil, fmt.Errorf(`--stdin %q: the only value is "-" (standard input); use --stdin-file for a file`, o.stdin)
	case o.stdin != "" || o.stdinFile != "":
		max, err := a.maxStdinBytes(o)
		if err != nil {
			return nil, err
		}
		if in, err = a.readStdin(o.stdinFile, max); err != nil {
			return nil, err
		}
	}
	if o.stdin != "" || o.stdinFile != "" {
		// Always encoded: stdin may be any bytes, and JSON strings are not.
		b.Stdin = client.EncodeStdin(in, o.encode)
	}
	return b, nil
}

// envFlags are the values of --env, K=V or K alone for this shell's value
// of K; nil when none is given.
func (a *app) envFlags(kvs []string) (map[string]string, error) {
	var env map[string]string
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if k == "" {
			return nil, fmt.Errorf("--env %q: want NAME=VALUE", kv)
		}
		if !ok {
			found := false
			for _, e := range a.environ {
				if name, val, _ := strings.Cut(e, "="); name == k {
					v, found = val, true
				}
			}
			if !found {
				return nil, fmt.Errorf("--env %s: not set in this environment (use %s=VALUE)", k, k)
			}
		}
		if env == nil {
			env = map[string]string{}
		}
		if _, dup := env[k]; dup {
			// The API refuses a duplicate env key too; here the last
			// value silently won.
			return nil, fmt.Errorf("--env %s is given twice", k)
		}
		env[k] = v
	}
	return env, nil
}

// defaultMaxStdinBytes is the server's default limits.max_stdin_bytes:
// what the CLI reads of a stdin unless told the server allows more.
const defaultMaxStdinBytes = 512 << 10

// maxStdinBytes is --max-stdin-bytes, else ORDERLY_MAX_STDIN_BYTES, else
// the server's default limit. No endpoint tells a client the server's
// limit, and a stdin over it was read whole, sent and only then refused:
// `cat /dev/zero | orderly submit --stdin -` grew until memory ran out.
func (a *app) maxStdinBytes(o *submitOptions) (int64, error) {
	if o.maxStdin != 0 {
		if o.maxStdin < 0 {
			return 0, fmt.Errorf("--max-stdin-bytes %d: want a positive number of bytes", o.maxStdin)
		}
		return o.maxStdin, nil
	}
	if v := a.getenv("ORDERLY_MAX_STDIN_BYTES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("ORDERLY_MAX_STDIN_BYTES=%q: want a positive number of bytes", v)
		}
		return n, nil
	}
	return defaultMaxStdinBytes, nil
}

// readStdin reads the order's stdin, standard input for "" or "-", at
// most max bytes: one more and it stops reading and refuses, before
// anything is sent.
func (a *app) readStdin(file string, max int64) ([]byte, error) {
	r, what := a.stdin, "standard input"
	if file != "" && file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("--stdin-file: %w", err)
		}
		defer f.Close()
		r, what = f, "--stdin-file "+file
	}
	in, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if int64(len(in)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes, the most this client sends as stdin (the server's limit is limits.max_stdin_bytes, %d by default); "+
			"if the server allows more, raise --max-stdin-bytes or ORDERLY_MAX_STDIN_BYTES", what, max, defaultMaxStdinBytes)
	}
	return in, nil
}
