// Package systemd runs native unit verbs (start, stop, restart, reload,
// try-restart) and lists units over D-Bus, with no systemctl process and
// no shell. It connects per call: an action run is rare next to the cost
// of a connection, and nothing long-lived has to be owned and stopped.
package systemd

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strconv"

	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// Dial connects to systemd on bus: "system" (the system manager) or
// "user" (the calling user's manager, through DBUS_SESSION_BUS_ADDRESS).
func Dial(ctx context.Context, bus string) (*sd.Conn, error) {
	switch bus {
	case "system", "":
		return sd.NewSystemConnectionContext(ctx)
	case "user":
		return sd.NewConnection(func() (*dbus.Conn, error) { return userBus(ctx) })
	}
	return nil, fmt.Errorf("unknown bus %q: want system or user", bus)
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

// Run queues verb on unit (mode "replace", as systemctl does), waits for
// the job to finish or ctx to end, and reads the unit's state after it.
// An error means the job could not be queued or its end was not seen; a
// job that ran and failed is an Outcome with its JobResult.
func Run(ctx context.Context, bus, verb, unit string) (Outcome, error) {
	out := Outcome{Unit: unit, Verb: verb}
	c, err := Dial(ctx, bus)
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
	if out.JobID, err = call(ctx, unit, "replace", done); err != nil {
		return out, fmt.Errorf("%s %s: %w", verb, unit, err)
	}
	select {
	case out.JobResult = <-done:
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
