package main

import (
	"bytes"
	"context"
	"os"
	"os/user"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/config"
)

// TestServeSaysWhenOrdersRunAsItself: an order of serve's worker that runs
// as serve's own user can read serve's data dir (admin.token, the NATS
// seeds, the PostgreSQL socket that trusts it), so serve warns at start
// when an order naming no user runs as that user: no default user, or
// its own name or uid; not with sudo or another default user.
func TestServeSaysWhenOrdersRunAsItself(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	other := "nobody"
	if me.Username == "nobody" {
		other = "root"
	}
	for _, c := range []struct {
		w    config.Worker
		want bool
	}{
		{config.Worker{}, true},
		{config.Worker{DefaultUser: me.Username}, true},
		{config.Worker{DefaultUser: strconv.Itoa(os.Getuid())}, true},
		{config.Worker{UseSudo: true}, false},
		{config.Worker{DefaultUser: other}, false},
	} {
		if got := ordersRunAsItself(c.w); got != c.want {
			t.Errorf("default_user %q, use_sudo %v: warned %v, want %v", c.w.DefaultUser, c.w.UseSudo, got, c.want)
		}
	}
}

// TestWorkerSaysWhenOrdersRunAsItself: `orderly worker` whose orders that
// name no user run as its own user warns once at start, before it waits
// for its database, naming worker.default_user (such an order can read
// the worker's NATS seed and pgpass file); with another default user it
// says nothing. The database is unreachable: the worker waits for it
// until the context ends.
func TestWorkerSaysWhenOrdersRunAsItself(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	other := "nobody"
	if me.Username == "nobody" {
		other = "root"
	}
	const says = "orders that name no user run as the worker's own user"
	for _, c := range []struct {
		env  []string
		want int
	}{
		{nil, 1},
		{[]string{"ORDERLY_WORKER__DEFAULT_USER=" + me.Username}, 1},
		{[]string{"ORDERLY_WORKER__DEFAULT_USER=" + other}, 0},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		var out bytes.Buffer
		err := run(ctx, []string{"orderly", "worker", "--host", "own-user",
			"--database-url", "postgres://orderly@127.0.0.1:1/orderly", "--nats-url", "nats://127.0.0.1:1"},
			c.env, strings.NewReader(""), &out, &out)
		cancel()
		if got := strings.Count(out.String(), says); got != c.want {
			t.Errorf("env %q: warned %d times, want %d (%v)\n%s", c.env, got, c.want, err, out.String())
		}
		if c.want > 0 && !strings.Contains(out.String(), "setting=worker.default_user") {
			t.Errorf("env %q: the warning names no setting\n%s", c.env, out.String())
		}
	}
}
