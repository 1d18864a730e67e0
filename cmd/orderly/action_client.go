package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/orderly-run/orderly/api/client"
)

// actionListCommand is `orderly action ls`: the actions this principal
// may run, with their params.
func (a *app) actionListCommand() *cobra.Command {
	var conn connFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the actions you may run, with their params",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client(cmd, &conn)
			if err != nil {
				return err
			}
			list, err := c.Actions(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeValue(a.stdout, map[string]any{"actions": list})
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tRUNS\tHOSTS\tPARAMS")
			for _, act := range list {
				runs := templateLine(act.Command)
				if act.Kind == "systemd" {
					runs = act.Verb + " " + act.Unit
				}
				var params []string
				for _, p := range act.Params {
					params = append(params, paramUsage(p))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", act.Name, runs, strings.Join(act.Hosts, ","), strings.Join(params, " "))
			}
			return tw.Flush()
		},
	}
	conn.bind(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's answer as JSON")
	hintUnreachable(cmd)
	return cmd
}

// templateLine is an action's command template on one line: a word with
// a space, a quote or a character that does not print is quoted as
// shellQuote does, a placeholder ({id}) is left as it is. Joined raw, a
// printf format's "\n" broke the RUNS column over two rows.
func templateLine(words []string) string {
	out := make([]string, len(words))
	for i, w := range words {
		out[i] = w
		if w == "" || strings.ContainsFunc(w, func(r rune) bool {
			return unicode.IsSpace(r) || !unicode.IsPrint(r) || strings.ContainsRune(`'"\$`+"`", r)
		}) {
			out[i] = shellQuote(w)
		}
	}
	return strings.Join(out, " ")
}

// paramUsage is how `action ls` shows a param: name=<type>, in brackets
// when it has a default, * when secret.
func paramUsage(p client.ActionParam) string {
	kind := p.Type
	switch {
	case p.Type == "enum":
		kind = strings.Join(p.Values, "|")
	case p.Pattern != "":
		kind = p.Pattern
	}
	s := p.Name + "=" + kind
	if p.Secret {
		s += "*"
	}
	if !p.Required {
		s = "[" + s + "]"
	}
	return s
}

// actionRunCommand is `orderly action run NAME --host HOST -p k=v`.
func (a *app) actionRunCommand() *cobra.Command {
	var (
		conn               connFlags
		host, idemKey      string
		correlation        string
		params, secretEnvs []string
		wait, asJSON       bool
		retryFor           time.Duration
	)
	cmd := &cobra.Command{
		Use:   "run NAME --host HOST [-p NAME=VALUE]... [--secret-env NAME=VAR]...",
		Short: "Run an action on a host (the worker renders the command from its own config)",
		Long: `Run the action NAME on HOST with the given param values. Only the name and the
values are sent; the worker renders the command from its own config after
validating each value. A secret value is best passed with --secret-env
NAME=VAR, which reads it from the environment variable VAR: a value on the
command line is visible to every user of this machine.

Without --wait it prints the order id; with --wait it streams the output
and exits with the remote exit code, as submit --wait does.`,
		Example: `  orderly action run restart-example --host web-3 -p id=0042 --wait
  ROTATE_PW=… orderly action run rotate-log --host web-3 -p file=access --secret-env password=ROTATE_PW`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			values := map[string]any{}
			for _, kv := range params {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return fmt.Errorf("-p %q: want NAME=VALUE", kv)
				}
				if _, dup := values[k]; dup {
					return fmt.Errorf("-p %s is given twice", k) // the API refuses a duplicate key too
				}
				values[k] = v
			}
			for _, kv := range secretEnvs {
				k, env, ok := strings.Cut(kv, "=")
				if !ok || k == "" || env == "" {
					return fmt.Errorf("--secret-env %q: want NAME=VARIABLE", kv)
				}
				v := a.getenv(env)
				if v == "" {
					return fmt.Errorf("--secret-env %s: the environment variable %s is not set", k, env)
				}
				if _, dup := values[k]; dup {
					return fmt.Errorf("--secret-env %s: %s is given twice", k, k)
				}
				values[k] = v
			}
			c, err := a.client(cmd, &conn)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var ord *client.Order
			tries := 0
			err = a.sendRetrying(ctx, retryFor, idemKey != "", func() (err error) {
				tries++
				ord, err = c.RunAction(ctx, args[0], host, values, client.SubmitOptions{IdempotencyKey: idemKey, CorrelationID: correlation})
				return err
			})
			if err != nil {
				return err
			}
			if tries == 1 {
				a.noteReplayed(idemKey, ord, nil) // as submit's
			}
			if !wait {
				if asJSON {
					return writeJSON(a.stdout, ord.Raw)
				}
				_, err := fmt.Fprintln(a.stdout, ord.ID)
				return err
			}
			return a.waitOrder(ctx, c, ord, asJSON, true)
		},
	}
	conn.bind(cmd)
	fs := cmd.Flags()
	fs.StringVar(&host, "host", "", "host to run on")
	fs.StringArrayVarP(&params, "param", "p", nil, "param value NAME=VALUE (repeatable)")
	fs.StringArrayVar(&secretEnvs, "secret-env", nil, "param NAME whose value is read from the environment variable VAR: NAME=VAR (repeatable)")
	submitWaitFlag(fs, &wait, "the action's own timeout bounds the run")
	fs.StringVar(&idemKey, "idempotency-key", "", "a retry with the same key returns the same order instead of running again")
	correlationFlag(fs, &correlation)
	retryForFlag(fs, &retryFor)
	fs.BoolVar(&asJSON, "json", false, "print the order (with --wait, the finished order) as JSON")
	_ = cmd.MarkFlagRequired("host")
	hintUnreachable(cmd)
	return cmd
}
