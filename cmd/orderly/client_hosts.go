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
	var maintenance, reason string
	cmd := &cobra.Command{
		Use:   "hosts [HOST]",
		Short: "List known hosts, or show one host with its running order and queue",
		Example: "  orderly hosts\n" +
			"  orderly hosts web-3\n" +
			"  orderly hosts --forget web-9   # a host gone for good (admin)\n" +
			"  orderly hosts --forget web-9 --abandon   # with the orders its dead worker left (admin)\n" +
			"  orderly hosts web-2 --maintenance on --reason 'disk swap'   # refuse its new orders (admin)\n" +
			"  orderly hosts web-2 --maintenance off",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd, &conn)
			if err != nil {
				return err
			}
			if abandon && !forget {
				return errors.New("--abandon goes with --forget: orderly hosts --forget HOST --abandon")
			}
			if cmd.Flags().Changed("reason") && maintenance != "on" {
				return errors.New("--reason goes with --maintenance on: orderly hosts HOST --maintenance on --reason TEXT")
			}
			if cmd.Flags().Changed("maintenance") {
				if len(args) != 1 {
					return errors.New("--maintenance needs the host: orderly hosts HOST --maintenance on|off")
				}
				var why *string // no --reason: a host in maintenance keeps its own
				if cmd.Flags().Changed("reason") {
					why = &reason
				}
				return a.setMaintenance(cmd, c, args[0], maintenance, why)
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
				online, standby := yesNo(h.Online), standbyShort(h.Standby)
				if h.Registry != "" {
					online, standby = "?", "?"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cellText(h.Host), online, standby, ago(h.LastSeen, now), dash(cellText(h.Version)), queued, dashID(h.CurrentOrder))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if list.Registry != "" {
				fmt.Fprintln(a.stdout, registryUnknownNote)
			}
			// Under the table, only when a worker runs without it: a
			// column of "on" would say nothing most of the time.
			for _, h := range list.Hosts {
				if guardOff(h.RestoreGuard) {
					fmt.Fprintf(a.stdout, "%s: restore guard %s\n", cellText(h.Host), cellText(h.RestoreGuard))
				}
			}
			// Likewise a worker online but cut off from PostgreSQL: its
			// host runs nothing while its orders pile up.
			for _, h := range list.Hosts {
				if h.PostgresUnreachable != nil {
					fmt.Fprintf(a.stdout, "%s: %s\n", cellText(h.Host), postgresOutageText(h.PostgresUnreachable, now))
				}
			}
			// Likewise a host in maintenance, which is rare.
			for _, h := range list.Hosts {
				if h.Maintenance != nil {
					fmt.Fprintf(a.stdout, "%s: in maintenance, new orders refused (%s)\n", cellText(h.Host), maintenanceText(h.Maintenance, now))
				}
			}
			return nil
		},
	}
	conn.bind(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's answer as JSON")
	cmd.Flags().BoolVar(&forget, "forget", false, "forget HOST, gone for good: it leaves the list and the fleet gauges; refused while a worker serves it, orders of it may still run or it is in maintenance (admin)")
	cmd.Flags().BoolVar(&abandon, "abandon", false, "with --forget: mark the host's running orders interrupted and cancel its queued ones first, for a worker that will never come back (admin)")
	cmd.Flags().StringVar(&maintenance, "maintenance", "", "on: put HOST in maintenance, where its new orders are refused (409 host_in_maintenance) and its queued and running ones are left alone; off: accept them again (admin)")
	cmd.Flags().StringVar(&reason, "reason", "", "with --maintenance on: why, shown in every refused order's message; without it a host already in maintenance keeps its reason, --reason '' clears it")
	cmd.MarkFlagsMutuallyExclusive("forget", "json")
	cmd.MarkFlagsMutuallyExclusive("forget", "maintenance")
	cmd.MarkFlagsMutuallyExclusive("maintenance", "json")
	return cmd
}

// ranOn reports whether a worker ran an order of host: the history keeps
// the orders of a host forgotten (orderly hosts HOST --forget), whose
// record is gone as that of a name no worker ever served. Only a worker
// sets these statuses (queued and canceled ones name a typo as well).
// An answer it cannot have is a no.
func (a *app) ranOn(cmd *cobra.Command, c *client.Client, host string) bool {
	l, err := c.List(cmd.Context(), client.ListOptions{Host: host, Limit: 1, WithoutOutputs: true, Status: []client.Status{
		client.StatusRunning, client.StatusSucceeded, client.StatusFailed, client.StatusTimedOut, client.StatusKilled, client.StatusInterrupted}})
	return err == nil && len(l.Orders) > 0
}

// setMaintenance puts host in maintenance (on) or takes it out (off).
func (a *app) setMaintenance(cmd *cobra.Command, c *client.Client, host, onOff string, reason *string) error {
	var (
		st  *client.MaintenanceState
		err error
	)
	switch {
	case onOff == "on" && reason == nil:
		st, err = c.KeepMaintenance(cmd.Context(), host)
	case onOff == "on":
		st, err = c.StartMaintenance(cmd.Context(), host, *reason)
	case onOff == "off":
		st, err = c.EndMaintenance(cmd.Context(), host)
	default:
		return fmt.Errorf("--maintenance takes on or off, not %q", onOff)
	}
	if err != nil {
		return err
	}
	if st.Maintenance == nil {
		fmt.Fprintf(a.stdout, "host %s is out of maintenance: its new orders are accepted\n", cellText(host))
		return nil
	}
	fmt.Fprintf(a.stdout, "host %s is in maintenance: its new orders are refused (%s)\n", cellText(host), maintenanceText(st.Maintenance, time.Now()))
	// The host as it is now: a name no worker ever served is most likely
	// a typo, which leaves the host meant taking orders; an order running
	// on it is left alone as the queued ones are. An API that cannot
	// answer now was answered above: the switch is made.
	h, herr := c.Host(cmd.Context(), host)
	if herr == nil && h.LastSeen == nil && h.Version == "" {
		if a.ranOn(cmd, c, host) {
			fmt.Fprintf(a.stderr, "orderly: host %s was forgotten (orderly hosts %s --forget) after its workers ran orders (orderly ls --host %s): no worker serves it now; one that takes it again lists it again\n",
				cellText(host), cellText(host), cellText(host))
		} else {
			// Not "ever": a host forgotten whose orders the retention
			// deleted has left nothing that tells it from a typo (its
			// record and its maintenance switches go too).
			fmt.Fprintf(a.stderr, "orderly: no worker of host %s is known: none serves it and none ran an order of it within the retention (a name never served, or a host forgotten longer ago); "+
				"if the name is mistyped, the host you meant still takes orders (orderly hosts lists the hosts; take this one out with orderly hosts %s --maintenance off)\n",
				cellText(host), cellText(host))
		}
	}
	if herr == nil && h.CurrentOrder != nil {
		fmt.Fprintf(a.stdout, "order %s runs on it and is left alone\n", h.CurrentOrder)
	}
	if st.QueueDepth > 0 {
		orders := "orders wait"
		if st.QueueDepth == 1 {
			orders = "order waits"
		}
		fmt.Fprintf(a.stdout, "%d %s queued for it and will run when its worker takes them: list them with orderly hosts %s, cancel what must not run with orderly cancel ID\n",
			st.QueueDepth, orders, cellText(host))
	}
	return nil
}

// maintenanceText says who put a host in maintenance, when, and why.
func maintenanceText(m *client.Maintenance, now time.Time) string {
	t := "by " + cellText(m.By) + " " + ago(&m.Since, now)
	if m.Reason != "" {
		t += ": " + cellText(m.Reason)
	}
	return t
}

// printHost shows one host and its queue in execution order.
func printHost(w io.Writer, h *client.Host) error {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	fmt.Fprintf(tw, "Host:\t%s\n", cellText(h.Host))
	if h.Registry != "" {
		fmt.Fprintf(tw, "Online:\t? (%s)\n", registryUnknownNote)
	} else {
		fmt.Fprintf(tw, "Online:\t%s\n", yesNo(h.Online))
	}
	fmt.Fprintf(tw, "Last seen:\t%s\n", ago(h.LastSeen, time.Now()))
	fmt.Fprintf(tw, "Version:\t%s\n", dash(cellText(h.Version)))
	if h.Registry != "" {
		fmt.Fprintf(tw, "Standby:\t?\n")
	} else {
		fmt.Fprintf(tw, "Standby:\t%s\n", standbyLong(h.Standby, time.Now()))
	}
	if h.RestoreGuard != "" {
		fmt.Fprintf(tw, "Restore guard:\t%s\n", cellText(h.RestoreGuard))
	}
	if h.PostgresUnreachable != nil {
		fmt.Fprintf(tw, "PostgreSQL:\t%s\n", postgresOutageText(h.PostgresUnreachable, time.Now()))
	}
	if h.QueueDepth != nil {
		fmt.Fprintf(tw, "Queue depth:\t%d\n", *h.QueueDepth)
	}
	if h.Maintenance != nil {
		fmt.Fprintf(tw, "Maintenance:\t%s (new orders refused)\n", maintenanceText(h.Maintenance, time.Now()))
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

// registryUnknownNote says why a listing's ONLINE and STANDBY are "?"
// (client.RegistryUnavailable): the API answered from PostgreSQL alone.
const registryUnknownNote = "NATS did not answer the API: online and standby unknown; last seen, version and orders as PostgreSQL recorded them"

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

// postgresOutageText says that a host's worker cannot reach PostgreSQL,
// since when and why (the error only for an admin or an auditor).
func postgresOutageText(o *client.PostgresOutage, now time.Time) string {
	t := fmt.Sprintf("worker cannot reach PostgreSQL since %s (%s ago, %d failed attempts), its orders wait",
		o.Since.UTC().Format(time.RFC3339), now.Sub(o.Since).Round(time.Second), o.Failures)
	if o.Error != "" {
		t += ": " + cellText(o.Error)
	}
	return t
}
