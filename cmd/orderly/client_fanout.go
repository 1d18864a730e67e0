package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api/client"
)

// submitted handles the answer to a fan-out (--hosts): one order per host
// under one batch id, and the hosts refused (the command then fails).
func (a *app) submitted(ctx context.Context, c *client.Client, o *submitOptions, b *client.Batch) error {
	orders := b.Orders
	batch := "-"
	if b.BatchID != uuid.Nil {
		batch = b.BatchID.String()
	}
	for _, r := range b.Refused {
		fmt.Fprintf(a.stderr, "%s: refused: %s (%s)\n", cellText(r.Host), cellText(r.Error.Message), cellText(string(r.Error.Code)))
	}
	var err error
	switch {
	case o.wait:
		err = a.waitBatch(ctx, c, batch, orders, b.Refused, o.json)
	case o.json:
		err = writeJSON(a.stdout, b.Raw)
	default:
		fmt.Fprintf(a.stdout, "batch %s\n", batch)
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "HOST\tORDER")
		for _, ord := range orders {
			fmt.Fprintf(tw, "%s\t%s\n", ord.Host, ord.ID)
		}
		err = tw.Flush()
	}
	if err != nil || len(b.Refused) == 0 {
		return err
	}
	// A host that got no order is a failure of the command, as a host
	// whose order failed is.
	return fmt.Errorf("batch %s: %d of %d hosts refused", batch, len(b.Refused), len(b.Refused)+len(orders))
}

// waitBatch polls each order of a fan-out until all are finished, printing
// "host: status" lines on stderr as they change. Then it prints every
// host's output with each line prefixed by "host: " (stdout to stdout,
// stderr to stderr), and succeeds only if every order succeeded. With
// asJSON it prints the batch id, the finished orders and the hosts
// refused (the answer's refused, when there are any).
func (a *app) waitBatch(ctx context.Context, c *client.Client, batch string, orders []client.Order, refused []client.HostRefusal, asJSON bool) error {
	sort.SliceStable(orders, func(i, j int) bool { return orders[i].Host < orders[j].Host })
	raws := make([]json.RawMessage, len(orders))
	for _, ord := range orders {
		fmt.Fprintf(a.stderr, "%s: %s\n", ord.Host, progress(&ord))
	}
	delay := 200 * time.Millisecond
	var failingSince time.Time
	checkWorkersAt := time.Now().Add(noWorkerCheckAfter)
	// The batch, without outputs and conditionally, says which orders
	// moved: only those are read, and each finished one once with its
	// output. Read one by one, a fan-out to 1,000 hosts cost 1,000
	// requests a round. Without a batch id (an API that gave none), or
	// when the batch cannot be read, every order is read as before.
	var lean *client.Batch
	for {
		status := map[uuid.UUID]client.Status{}
		if batch != "-" {
			var err error
			if lean == nil {
				lean, err = c.BatchWith(ctx, batch, client.BatchOptions{WithoutOutputs: true})
			} else {
				lean, _, err = c.RefreshBatch(ctx, lean)
			}
			if err != nil {
				lean = nil
			} else {
				for _, o := range lean.Orders {
					status[o.ID] = o.Status
				}
			}
		}
		pending := 0
		for i := range orders {
			if orders[i].Status.Terminal() && raws[i] != nil {
				continue
			}
			if st, ok := status[orders[i].ID]; ok && !st.Terminal() {
				// Not finished: its status is all there is to show.
				if st != orders[i].Status {
					orders[i].Status = st
					fmt.Fprintf(a.stderr, "%s: %s\n", orders[i].Host, progress(&orders[i]))
				}
				pending++
				continue
			}
			// Conditional after the first read: a finished order's
			// output is not sent again at every round.
			cur, _, err := c.Refresh(ctx, &orders[i])
			if err != nil {
				if ctx.Err() != nil {
					fmt.Fprintf(a.stderr, "orderly: stopped waiting; batch %s goes on (orderly ls --batch %s)\n", batch, batch)
					return stoppedExit(ctx)
				}
				if !client.Temporary(err) || !failingSince.IsZero() && time.Since(failingSince) > apiOutageTolerate {
					fmt.Fprintf(a.stderr, "orderly: batch %s was submitted, but waiting for it failed (orderly ls --batch %s)\n", batch, batch)
					return err
				}
				if failingSince.IsZero() {
					failingSince = time.Now()
				}
				pending++
				continue
			}
			failingSince = time.Time{}
			if cur.Status != orders[i].Status {
				fmt.Fprintf(a.stderr, "%s: %s\n", cur.Host, progress(cur))
			}
			orders[i], raws[i] = *cur, cur.Raw
			if !cur.Status.Terminal() {
				pending++
			}
		}
		if pending == 0 {
			break
		}
		if !checkWorkersAt.IsZero() && time.Now().After(checkWorkersAt) {
			checkWorkersAt = time.Time{}
			a.sayHostsWithoutWorker(ctx, c, orders)
		}
		if err := sleepCtx(ctx, delay); err != nil {
			fmt.Fprintf(a.stderr, "orderly: stopped waiting; batch %s goes on (orderly ls --batch %s)\n", batch, batch)
			return stoppedExit(ctx)
		}
		delay = min(delay*3/2, pollMaxDelay)
	}

	counts := map[client.Status]int{}
	for _, ord := range orders {
		counts[ord.Status]++
	}
	if asJSON {
		out := map[string]any{"batch_id": batch, "orders": raws}
		if len(refused) > 0 {
			out["refused"] = refused
		}
		if err := writeValue(a.stdout, out); err != nil {
			return err
		}
	} else {
		for _, ord := range orders {
			if ord.Result == nil {
				continue
			}
			for i, w := range []io.Writer{a.stdout, a.stderr} {
				s := []client.Stream{ord.Result.Stdout, ord.Result.Stderr}[i]
				b, err := s.Decode()
				if err != nil {
					return fmt.Errorf("order %s: %w", ord.ID, err)
				}
				if err := writePrefixed(w, ord.Host+": ", b); err != nil {
					return err
				}
			}
		}
	}
	if counts[client.StatusSucceeded] == len(orders) {
		return nil
	}
	var parts []string
	for st, n := range counts {
		parts = append(parts, fmt.Sprintf("%d %s", n, st))
	}
	sort.Strings(parts)
	hosts := "hosts"
	if len(orders) == 1 {
		hosts = "host"
	}
	return fmt.Errorf("batch %s: not every order succeeded (%d %s: %s)", batch, len(orders), hosts, strings.Join(parts, ", "))
}

// sayHostsWithoutWorker notes, once per wait, each host of a fan-out
// whose order is still queued and that has no worker online (a host
// typed wrong, a worker not started): a batch with one showed "web-2:
// queued" and waited in silence, where a single order's wait says so
// (sayWhenNoWorker). One request for the whole batch; a list the API
// cannot read, or whose online states it does not know (NATS did not
// answer), says nothing.
func (a *app) sayHostsWithoutWorker(ctx context.Context, c *client.Client, orders []client.Order) {
	queued := map[string]bool{}
	for _, o := range orders {
		if o.Status == client.StatusQueued {
			queued[o.Host] = true
		}
	}
	if len(queued) == 0 {
		return
	}
	l, err := c.Hosts(ctx)
	if err != nil || l.Registry != "" {
		return
	}
	for _, h := range l.Hosts {
		if queued[h.Host] && !h.Online && h.Registry == "" {
			fmt.Fprintf(a.stderr, "%s: no worker online (%s): its order waits until one starts\n", cellText(h.Host), lastSeenText(&h))
		}
	}
}

// progress is a status with its outcome: "failed (exit 3)".
func progress(o *client.Order) string {
	if !o.Status.Terminal() || o.Result == nil {
		return string(o.Status)
	}
	if o.Result.Error != nil && *o.Result.Error != "" && o.Result.ExitCode == nil {
		return fmt.Sprintf("%s: %s", o.Status, cellText(*o.Result.Error))
	}
	return fmt.Sprintf("%s (exit %s)", o.Status, exitText(o))
}

// writePrefixed writes b line by line, each line starting with prefix; a
// last line without a newline gets one.
func writePrefixed(w io.Writer, prefix string, b []byte) error {
	var buf bytes.Buffer
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line = b[:i+1]
		}
		b = b[len(line):]
		buf.WriteString(prefix)
		buf.Write(line)
		if line[len(line)-1] != '\n' {
			buf.WriteByte('\n')
		}
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// Polling of a fan-out: the longest pause between rounds, and how long the
// API may stay unreachable before waiting gives up.
const (
	pollMaxDelay      = time.Second
	apiOutageTolerate = 30 * time.Second
)

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
