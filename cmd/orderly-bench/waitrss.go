package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
)

// waitRSS measures serve's peak RSS over one POST ?wait of an order that
// keeps 10 MiB of output, as text (`yes`) and as base64 (NUL bytes from
// /dev/zero): the peak is reset first (/proc/<pid>/clear_refs 5), so it is
// this order's alone, on top of what serve already held.
func waitRSS(ctx context.Context, c *client, srv *server, o options, rep *report) error {
	const kept = 10 << 20
	size := strconv.Itoa(kept)
	for _, k := range []struct{ name, script string }{
		{"text", "yes | head -c " + size},
		{"base64", "head -c " + size + " /dev/zero"},
	} {
		clear := fmt.Sprintf("/proc/%d/clear_refs", srv.cmd.Process.Pid)
		if err := os.WriteFile(clear, []byte("5"), 0); err != nil {
			rep.detail("serve peak RSS over a ?wait of 10 MiB kept ("+k.name+")", "not measured", err.Error())
			continue
		}
		before := srv.memory()
		progress(fmt.Sprintf("rss: ?wait of an order keeping 10 MiB of %s output", k.name))
		code, b, err := c.do(ctx, http.MethodPost, "/v1/orders?wait=60", orderBody(o.backlogHost, "sh", "-c", k.script))
		if err != nil {
			return fmt.Errorf("rss order: %w", err)
		}
		if code != http.StatusOK {
			return fmt.Errorf("rss order: %d %.300s", code, b)
		}
		after := srv.memory()
		rep.row(fmt.Sprintf("serve peak RSS over a ?wait of 10 MiB kept output (%s)", k.name), mib(after.serveHWM),
			"≤ 80 MiB", ptr(after.serveHWM <= 80*1024))
		rep.detail(fmt.Sprintf("… RSS before that order / after it / its response body (%s)", k.name),
			fmt.Sprintf("%s / %s / %.1f MiB", mib(before.serveRSS), mib(after.serveRSS), float64(len(b))/(1<<20)),
			"the peak is reset through clear_refs right before the POST; serve also holds the result write and the live chunks in ORDERLY_LIVE (a memory stream); the worker's capture past 1 MiB waits in a file (executor.Spill)")
	}
	return nil
}
