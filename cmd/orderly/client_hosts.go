package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/orderly-run/orderly/api/client"
)

func (a *app) hostsCommand() *cobra.Command {
	var conn connFlags
	var asJSON, forget, abandon bool
	cmd := &cobra.Command{
		Use:   "hosts [HOST]",
		Short: "List known hosts, or show one host with its running order and queue",
		Example: "  orderly hosts\n" +
			"  orderly hosts web-3\n" +
			"  orderly hosts --forget web-9   # a host gone for good (admin)\n" +
			"  orderly hosts --forget web-9 --abandon   # with the orders its dead worker left (admin)",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd, &conn)
			if err != nil {
				return err
			}
			if abandon && !forget {
				return errors.New("--abandon goes with --forget: orderly hosts --forget HOST --abandon")
			}
			if forget {
				if len(args) != 1 {
					return errors.New("--forget needs the host to forget: orderly hosts --forget HOST")
				}
				forget := c.ForgetHost
				if abandon {
					forget = c.AbandonHost
				}
				if err := forget(cmd.Context(), args[0]); err != nil {
					// The API says "abandon=true", its query parameter;
					// on the command line that is --abandon.
					var apiErr *client.Error
					if !abandon && errors.As(err, &apiErr) && apiErr.Code == client.CodeConflict && apiErr.Details["active_orders"] != nil {
						them := "them"
						if n, _ := apiErr.Details["active_orders"].(float64); n == 1 {
							them = "it"
						}
						return fmt.Errorf("%w; to abandon %s with the host: orderly hosts --forget %s --abandon", err, them, args[0])
					}
					return err
				}
				fmt.Fprintf(a.stdout, "forgot host %s\n", args[0])
				return nil
			}
			if len(args) == 1 {
				h, err := c.Host(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(a.stdout, h.Raw)
				}
				return printHost(a.stdout, h)
			}
			list, err := c.Hosts(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, list.Raw)
			}
			now := time.Now()
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "HOST\tONLINE\tSTANDBY\tLAST SEEN\tVERSION\tQUEUED\tCURRENT ORDER")
			for _, h := range list.Hosts {
				queued := "-" // an API older than queue_depth in the list
				if h.QueueDepth != nil {
					queued = strconv.Itoa(*h.QueueDepth)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cellText(h.Host), yesNo(h.Online), standbyShort(h.Standby), ago(h.LastSeen, now), dash(cellText(h.Version)), queued, dashID(h.CurrentOrder))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			// Under the table, only when a worker runs without it: a
			// column of "on" would say nothing most of the time.
			for _, h := range list.Hosts {
				if guardOff(h.RestoreGuard) {
					fmt.Fprintf(a.stdout, "%s: restore guard %s\n", cellText(h.Host), cellText(h.RestoreGuard))
				}
			}
			return nil
		},
	}
	conn.bind(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's answer as JSON")
	cmd.Flags().BoolVar(&forget, "forget", false, "forget HOST, gone for good: it leaves the list and the fleet gauges; refused while a worker serves it or orders of it may still run (admin)")
	cmd.Flags().BoolVar(&abandon, "abandon", false, "with --forget: mark the host's running orders interrupted and cancel its queued ones first, for a worker that will never come back (admin)")
	cmd.MarkFlagsMutuallyExclusive("forget", "json")
	return cmd
}

// printHost shows one host and its queue in execution order.
func printHost(w io.Writer, h *client.Host) error {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	fmt.Fprintf(tw, "Host:\t%s\n", cellText(h.Host))
	fmt.Fprintf(tw, "Online:\t%s\n", yesNo(h.Online))
	fmt.Fprintf(tw, "Last seen:\t%s\n", ago(h.LastSeen, time.Now()))
	fmt.Fprintf(tw, "Version:\t%s\n", dash(cellText(h.Version)))
	fmt.Fprintf(tw, "Standby:\t%s\n", standbyLong(h.Standby, time.Now()))
	if h.RestoreGuard != "" {
		fmt.Fprintf(tw, "Restore guard:\t%s\n", cellText(h.RestoreGuard))
	}
	if h.QueueDepth != nil {
		fmt.Fprintf(tw, "Queue depth:\t%d\n", *h.QueueDepth)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if h.Running == nil && len(h.Queued) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tID\tSTATUS\tSUBMITTED\tCOMMAND")
	if o := h.Running; o != nil {
		fmt.Fprintf(tw, "-\t%s\t%s\t%s\t%s\n", o.ID, o.Status, localTime(&o.SubmittedAt), truncate(commandLine(o), 60))
	}
	for i, o := range h.Queued {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", i+1, o.ID, o.Status, localTime(&o.SubmittedAt), truncate(commandLine(&o), 60))
	}
	return tw.Flush()
}

// guardOff reports whether a host's restore_guard says its worker runs
// without the claim mark's check.
func guardOff(g string) bool { return strings.HasPrefix(g, "off") }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func dashID(id *uuid.UUID) string {
	if id == nil {
		return "-"
	}
	return id.String()
}

// standbyShort says whether a worker stands by to take the host over.
func standbyShort(sb *client.Standby) string {
	if sb == nil {
		return "-"
	}
	return "yes"
}

// standbyLong names the worker that stands by, with its version and how
// long it has waited.
func standbyLong(sb *client.Standby, now time.Time) string {
	if sb == nil {
		return "-"
	}
	since := sb.WaitingSince
	return fmt.Sprintf("%s (version %s, started waiting %s)", cellText(sb.Instance), dash(cellText(sb.Version)), ago(&since, now))
}
