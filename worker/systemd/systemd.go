// Package systemd runs native unit verbs (start, stop, restart, reload,
// try-restart) and lists units over D-Bus, with no systemctl process and
// no shell. It connects per call: an action run is rare next to the cost
// of a connection, and nothing long-lived has to be owned and stopped.
package systemd

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// Dial connects to systemd on bus: "system" (the system manager) or
// "user" (the calling user's manager, through DBUS_SESSION_BUS_ADDRESS).
func Dial(ctx context.Context, bus string) (*sd.Conn, error) {
	c, _, err := dial(ctx, bus)
	return c, err
}

// dial is Dial that also returns the bus connection of c's calls, for
// the calls go-systemd has no method for (the bus's own, a job's).
func dial(ctx context.Context, bus string) (*sd.Conn, *dbus.Conn, error) {
	var open func() (*dbus.Conn, error)
	switch bus {
	case "system", "":
		open = func() (*dbus.Conn, error) { return hello(dbus.SystemBusPrivate(dbus.WithContext(ctx))) }
	case "user":
		open = func() (*dbus.Conn, error) { return userBus(ctx) }
	default:
		return nil, nil, fmt.Errorf("unknown bus %q: want system or user", bus)
	}
	var calls *dbus.Conn // the first dialed: go-systemd's for calls, the second its for signals
	c, err := sd.NewConnection(func() (*dbus.Conn, error) {
		conn, err := open()
		if calls == nil {
			calls = conn
		}
		return conn, err
	})
	return c, calls, err
}

// userBus connects to the session bus of DBUS_SESSION_BUS_ADDRESS (or
// /run/user/<uid>/bus), authenticated as go-systemd does. It never launches one: without an address the library ran
// dbus-launch from PATH, which started a new bus daemon that outlived the
// call and set the worker's environment to it, so every later run talked
// to a bus with no systemd on it.
func userBus(ctx context.Context) (*dbus.Conn, error) {
	c, err := dbus.SessionBusPrivateNoAutoStartup(dbus.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("%w (set DBUS_SESSION_BUS_ADDRESS to the bus of the user's systemd)", err)
	}
	return hello(c, nil)
}

// hello authenticates c as go-systemd does (EXTERNAL, the uid) and says
// Hello to the bus.
func hello(c *dbus.Conn, err error) (*dbus.Conn, error) {
	if err != nil {
		return nil, err
	}
	if err := c.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.Hello(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Unit is a unit and its state.
type Unit struct {
	Name        string `json:"unit"`
	LoadState   string `json:"load_state"`
	ActiveState string `json:"active_state"`
	SubState    string `json:"sub_state"`
}

// ListUnits lists the units systemd has loaded whose names match glob (a
// systemd pattern, like "example@*.service"), sorted by name.
func ListUnits(ctx context.Context, bus, glob string) ([]Unit, error) {
	c, err := Dial(ctx, bus)
	if err != nil {
		return nil, fmt.Errorf("connect to the %s bus: %w", bus, err)
	}
	defer c.Close()
	list, err := c.ListUnitsByPatternsContext(ctx, nil, []string{glob})
	if err != nil {
		return nil, fmt.Errorf("list units %s: %w", glob, err)
	}
	out := make([]Unit, 0, len(list))
	for _, u := range list {
		out = append(out, Unit{Name: u.Name, LoadState: u.LoadState, ActiveState: u.ActiveState, SubState: u.SubState})
	}
	slices.SortFunc(out, func(a, b Unit) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out, nil
}

// Outcome is what a verb did: the job's result ("done", "failed",
// "canceled", "timeout", "dependency", "skipped") and the unit's state
// after it, with its invocation id before and after (a restart that
// happened changes it).
type Outcome struct {
	Unit                 string `json:"unit"`
	Verb                 string `json:"verb"`
	JobID                int    `json:"job_id"`
	JobResult            string `json:"job_result"`
	ActiveState          string `json:"active_state"`
	SubState             string `json:"sub_state"`
	InvocationID         string `json:"invocation_id"`
	PreviousInvocationID string `json:"previous_invocation_id"`
}

// Fence is what the worker checks around a job it queues: Before, called
// just before the job is queued, refuses it with an error; Queued, when
// not nil, is told the job's id as soon as systemd took it, before Run
// waits for its end (the worker checks there whether the job came after a
// takeover, and records it if so).
type Fence struct {
	Before func(context.Context) error
	Queued func(ctx context.Context, job int)
}

// Run queues verb on unit (mode "replace", as systemctl does) unless
// fence (when not nil) refuses; waits for the job to finish or ctx to
// end, and reads the unit's state after it. An error means the job could
// not be queued or its end was not seen; a job that ran and failed is an
// Outcome with its JobResult.
func Run(ctx context.Context, bus, verb, unit string, fence *Fence) (Outcome, error) {
	out := Outcome{Unit: unit, Verb: verb}
	c, calls, err := dial(ctx, bus)
	if err != nil {
		return out, fmt.Errorf("connect to the %s bus: %w", bus, err)
	}
	defer c.Close()
	out.PreviousInvocationID = invocationID(ctx, c, unit)
	// Buffered: the library blocks its signal loop until the result is read.
	done := make(chan string, 1)
	var call func(context.Context, string, string, chan<- string) (int, error)
	switch verb {
	case "start":
		call = c.StartUnitContext
	case "stop":
		call = c.StopUnitContext
	case "restart":
		call = c.RestartUnitContext
	case "reload":
		call = c.ReloadUnitContext
	case "try-restart":
		call = c.TryRestartUnitContext
	default:
		return out, fmt.Errorf("unknown verb %q", verb)
	}
	if fence != nil && fence.Before != nil {
		// After the dial, which waits as long as the bus does.
		if err := fence.Before(ctx); err != nil {
			return out, fmt.Errorf("%s %s not queued: %w", verb, unit, err)
		}
	}
	if out.JobID, err = call(ctx, unit, "replace", done); err != nil {
		return out, fmt.Errorf("%s %s: %w", verb, unit, err)
	}
	if fence != nil && fence.Queued != nil {
		fence.Queued(ctx, out.JobID)
	}
	// The job's end comes as a signal of the systemd that queued it. One
	// that left the bus (killed, its bus gone) sends none: without a
	// watch the order waited for the whole of its timeout, holding the
	// host's queue, and then claimed the job outlasted it.
	// Asked once the job is queued: systemd has the name by then (a user
	// manager that is up may take it a moment later).
	owner := nameOwner(ctx, calls)
	lost := make(chan error, 1)
	stop := make(chan struct{})
	defer close(stop)
	go watchJob(ctx, stop, calls, owner, out.JobID, unit, lost)
	select {
	case out.JobResult = <-done:
	case err := <-lost:
		select {
		case out.JobResult = <-done: // its end came just before
		default:
			return out, fmt.Errorf("%s %s: job %d: %w; whether the job ran is unknown", verb, unit, out.JobID, err)
		}
	case <-ctx.Done():
		return out, fmt.Errorf("%s %s: waiting for job %d: %w", verb, unit, out.JobID, ctx.Err())
	}
	props, err := c.GetUnitPropertiesContext(ctx, unit)
	if err != nil {
		return out, fmt.Errorf("read the state of %s: %w", unit, err)
	}
	out.ActiveState, _ = props["ActiveState"].(string)
	out.SubState, _ = props["SubState"].(string)
	if id, ok := props["InvocationID"].([]byte); ok {
		out.InvocationID = hex.EncodeToString(id)
	}
	return out, nil
}

// Refused reports whether err (of Run) is the caller being refused the
// call: polkit on the system bus (systemd answers AccessDenied, or
// InteractiveAuthorizationRequired when polkit would ask for a password
// no one can type), or the bus's own policy. Whatever the verb and the
// unit, the worker's user lacks the right, which only the host's
// administrator can grant.
func Refused(err error) bool {
	var e dbus.Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Name == "org.freedesktop.DBus.Error.AccessDenied" ||
		e.Name == "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
}

// managerPoll is how often Run, while it waits for a job, checks that
// the job is still systemd's; lostPolls checks in a row that find no such
// job on a bus whose systemd changed (or is gone) say the job is lost. A
// daemon-reexec reconnects to the bus under a new name and keeps its
// jobs, which then end with the signal Run waits for; the polls in a row
// outlast the moment its name has no owner.
var managerPoll = time.Second

const lostPolls = 3

// probeTimeout bounds each of the watch's calls: a bus that does not
// answer is not a reason to wait for ever.
const probeTimeout = 5 * time.Second

// systemdName is systemd's name on the bus.
const systemdName = "org.freedesktop.systemd1"

// watchJob sends on lost why job (of unit) will never end with a signal
// Run can see: the bus connection closed, or the systemd that queued it
// left the bus and none has the job. It returns when stop is closed or
// ctx ends.
func watchJob(ctx context.Context, stop <-chan struct{}, calls *dbus.Conn, owner string, job int, unit string, lost chan<- error) {
	tick := time.NewTicker(managerPoll)
	defer tick.Stop()
	missing := 0
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-calls.Context().Done():
			if ctx.Err() == nil {
				lost <- errors.New("the connection to the bus was closed (the bus is gone?)")
			}
			return
		case <-tick.C:
		}
		now := nameOwner(ctx, calls)
		if now != "" && (now == owner || jobOf(ctx, calls, job) == unit) {
			missing = 0 // its systemd, whose signal comes; or one that kept the job
			continue
		}
		if missing++; missing < lostPolls {
			continue
		}
		who := "no systemd is on the bus now"
		if now != "" {
			who = "the systemd on the bus now (" + now + ") has no such job"
		}
		lost <- fmt.Errorf("the systemd that queued it (%s) left the bus and %s", owner, who)
		return
	}
}

// nameOwner is the unique name of systemd on the bus of conn, "" when
// none (or the bus does not answer).
func nameOwner(ctx context.Context, conn *dbus.Conn) string {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var owner string
	if err := conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetNameOwner", 0, systemdName).Store(&owner); err != nil {
		return ""
	}
	return owner
}

// jobOf is the unit of systemd's job id, "" when systemd has no such job.
// It never starts systemd: a call to a name without an owner asks the
// bus to start one, and the session bus then waited for its activation,
// which hung the watch.
func jobOf(ctx context.Context, conn *dbus.Conn, job int) string {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var v dbus.Variant
	path := dbus.ObjectPath("/org/freedesktop/systemd1/job/" + strconv.Itoa(job))
	if err := conn.Object(systemdName, path).CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", dbus.FlagNoAutoStart,
		"org.freedesktop.systemd1.Job", "Unit").Store(&v); err != nil {
		return ""
	}
	if u, ok := v.Value().([]any); ok && len(u) == 2 {
		if name, ok := u[0].(string); ok {
			return name
		}
	}
	return ""
}

// invocationID is the unit's current invocation id in hex, or "" when it
// has none (never started, or not loaded).
func invocationID(ctx context.Context, c *sd.Conn, unit string) string {
	p, err := c.GetUnitPropertyContext(ctx, unit, "InvocationID")
	if err != nil {
		return ""
	}
	if id, ok := p.Value.Value().([]byte); ok {
		return hex.EncodeToString(id)
	}
	return ""
}
