package main

import (
	"os"
	"os/user"
	"strconv"

	"github.com/orderly-run/orderly/internal/config"
)

// ordersRunAsItself reports whether the worker of serve or of `orderly
// worker` runs an order that names no user as the process's own user: no
// worker.default_user (or the process's own name or uid) and no sudo.
//
// Such an order of serve can read serve's data dir, which that user owns:
// admin.token (the admin principal), the NATS seeds (serve.nk acts as the
// API on the bus) and the socket of the managed PostgreSQL, which trusts
// every local connection as its superuser (a row in orders is an order the
// reconciler queues). So a principal allowed only a command that reads a
// file it names (cat, tail, grep) can read the admin token. Such an order
// of `orderly worker` can read the worker's NATS seed and pgpass file, and
// act as its host's worker with them. Both say so at start (security.md,
// "Threat model").
func ordersRunAsItself(w config.Worker) bool {
	if w.UseSudo {
		return false
	}
	if w.DefaultUser == "" {
		return true
	}
	own := strconv.Itoa(os.Getuid())
	if w.DefaultUser == own {
		return true
	}
	u, err := user.Lookup(w.DefaultUser)
	return err == nil && u.Uid == own
}
