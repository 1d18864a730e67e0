package executor

import (
	"os/exec"
	"time"

	"github.com/orderly-run/orderly/internal/timerslack"
)

// OrdersTimerSlack has the commands of the orders Run from now on start
// with the timer slack d instead of the one they would inherit from the
// thread that starts them: `orderly worker` and `orderly serve` run with
// a slack of milliseconds for their runtime monitor's sake (cmd/orderly's
// timerslack.go), which an order's `sleep 0.001` must not inherit. Call
// it before the first Run, from any of the process's threads: they all
// have the slack the process runs with, which it reads here to put back.
// d <= 0, or a slack that cannot be read, leaves the commands with what
// they inherit.
func (e *Executor) OrdersTimerSlack(d time.Duration) {
	own, err := timerslack.Own()
	if d <= 0 || err != nil || own == d {
		return
	}
	e.ordersSlack, e.ownSlack = d, own
}

// start starts cmd, from a thread whose timer slack is the orders' for
// the fork when OrdersTimerSlack set one (timerslack.Start).
func (e *Executor) start(cmd *exec.Cmd) error {
	return timerslack.Start(cmd, e.ordersSlack, e.ownSlack)
}
