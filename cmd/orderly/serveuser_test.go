package main

import (
	"os"
	"os/user"
	"strconv"
	"testing"

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
		if got := ordersRunAsServe(c.w); got != c.want {
			t.Errorf("default_user %q, use_sudo %v: warned %v, want %v", c.w.DefaultUser, c.w.UseSudo, got, c.want)
		}
	}
}
