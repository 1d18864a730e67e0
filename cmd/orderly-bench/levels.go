package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// levels measures the peer loads (measureLevel) at each size of history in
// o.history, bulk-loading the orders in between, and adds a section per
// size and the growth comparison to the report. Without webhook it says so
// and measures nothing.
func levels(ctx context.Context, srv *server, c *client, o options, rep *report) error {
	if o.peerRounds <= 0 {
		return nil
	}
	bin := findWebhook()
	if bin == "" {
		rep.sections = append(rep.sections, "\npeer: not measured (no webhook on PATH or in bin/; scripts/ensure-webhook.sh installs it)\n")
		return nil
	}
	var sizes []int
	for _, f := range strings.Split(o.history, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			return fmt.Errorf("-history: %q is not a number of orders", f)
		}
		sizes = append(sizes, n)
	}
	wh, err := startWebhook(ctx, bin)
	if err != nil {
		return err
	}
	defer wh.stop()
	progress(fmt.Sprintf("starting %d more workers (hosts %s)", len(extraHosts), strings.Join(extraHosts, ", ")))
	stopWorkers, pids, err := startWorkers(ctx, srv, o.bin, c, extraHosts)
	defer stopWorkers()
	if err != nil {
		return err
	}
	all := append([]string{o.backlogHost}, extraHosts...)
	loaded := 0
	var ls []*level
	for _, n := range sizes {
		var watch *copyWatch
		if n > loaded {
			progress(fmt.Sprintf("history: COPY of %d more orders (to %d)", n-loaded, n))
			ended := make(chan struct{})
			if o.profile != "" {
				watch = watchCopy(ctx, srv, o.pprofURL, o.profile, n, ended)
			}
			err := loadHistory(ctx, srv, n-loaded, all)
			close(ended)
			if err != nil {
				if watch != nil {
					watch.wait()
				}
				return err
			}
			loaded = n
		}
		l, err := measureLevel(ctx, srv, c, o, wh, pids, n)
		watched := ""
		if watch != nil {
			watched = watch.wait()
		}
		if err != nil {
			return err
		}
		l.watched = watched
		ls = append(ls, l)
		rep.sections = append(rep.sections, l.section())
		if o.profile != "" && len(ls) == 1 {
			budget, err := profilePaths(ctx, srv, c, o)
			if err != nil {
				return err
			}
			rep.sections = append(rep.sections, "\n#### Per-order budget (profiled build, -profile "+o.profile+")\n"+budget)
		}
	}
	if o.profile != "" {
		sec, err := explainAll(ctx, srv, o.profile, loaded)
		if err != nil {
			sec = fmt.Sprintf("\nEXPLAIN failed: %v\n", err)
		}
		rep.sections = append(rep.sections, sec)
	}
	rep.sections = append(rep.sections, growth(ls))
	return nil
}
