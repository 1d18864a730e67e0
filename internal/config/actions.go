package config

import (
	"fmt"
	"time"

	"github.com/orderly-run/orderly/internal/order"
)

// Actions configures named, parameterized, fixed-format commands
// (docs/actions.md). The API and every worker read the same section: the
// API to list, validate and authorize a run; the worker to render the
// command from its own copy, whatever the API sent. internal/action
// compiles it; a definition that does not compile refuses the config (at
// start and on reload).
type Actions struct {
	// Bus is the D-Bus a worker talks to systemd on for native verbs and
	// unit choices: "system" (the system manager, the default) or "user"
	// (the manager of the worker's own user, DBUS_SESSION_BUS_ADDRESS).
	Bus string `koanf:"bus"`
	// Definitions are the actions, each with a unique name.
	Definitions []Action `koanf:"definitions"`
}

// Action is one action definition.
type Action struct {
	Name        string        `koanf:"name"`
	Title       string        `koanf:"title"`
	Description string        `koanf:"description"`
	Params      []ActionParam `koanf:"params"`
	// Command is the argv template: each element is literal text with
	// {param} placeholders, rendered element by element (never a shell).
	// Exactly one of Command and Systemd is set.
	Command []string `koanf:"command"`
	// Env is extra environment of the command, values with placeholders:
	// the only place a secret param may be used (argv is visible to every
	// user of the host in /proc).
	Env []ActionEnv `koanf:"env"`
	// Systemd is a native unit verb over D-Bus, in place of a command.
	Systemd ActionSystemd `koanf:"systemd"`
	// Roles and Principals may run the action (either matches); neither
	// set means nobody may.
	Roles      []string `koanf:"roles"`
	Principals []string `koanf:"principals"`
	// Hosts are globs of the hosts it may run on.
	Hosts []string `koanf:"hosts"`
	// RunAs is the user a command runs as ("" is the worker's default).
	RunAs string `koanf:"run_as"`
	// Timeout bounds a run (a command's process, or a systemd job).
	Timeout time.Duration `koanf:"timeout"`
	// Confirm asks the UI to confirm before running.
	Confirm bool        `koanf:"confirm"`
	Limit   ActionLimit `koanf:"limit"`
}

// ActionParam is one parameter of an action.
type ActionParam struct {
	Name        string `koanf:"name"`
	Title       string `koanf:"title"`
	Description string `koanf:"description"`
	// Type is string (the default), int, enum or bool.
	Type string `koanf:"type"`
	// Pattern is an RE2 regex the whole value must match (string).
	Pattern string `koanf:"pattern"`
	// Min and Max bound an int's value or a string's length in bytes.
	Min *int64 `koanf:"min"`
	Max *int64 `koanf:"max"`
	// Values are an enum's allowed values.
	Values []string `koanf:"values"`
	// Default is used when a run leaves the param out; without one the
	// param is required.
	Default *string `koanf:"default"`
	// Secret values are passed to the command (through Env only) but never
	// stored in history, logged, or echoed.
	Secret bool `koanf:"secret"`
	// Units, a glob like "example@*.service", takes the param's choices
	// from the host's systemd units that match it: the part matched by
	// the one * is the value.
	Units string `koanf:"units"`
}

// ActionEnv is one environment variable of an action's command.
type ActionEnv struct {
	Name  string `koanf:"name"`
	Value string `koanf:"value"`
}

// ActionSystemd is a native systemd verb on a unit named from a fixed
// pattern ("example@{id}.service").
type ActionSystemd struct {
	Verb string `koanf:"verb"` // start, stop, restart, reload, try-restart
	Unit string `koanf:"unit"`
}

// ActionLimit bounds how often an action runs: at most Runs runs per Per
// across the fleet, and at most ConcurrentPerHost queued or running at
// once on one host. Zero is no limit.
type ActionLimit struct {
	Runs              int           `koanf:"runs"`
	Per               time.Duration `koanf:"per"`
	ConcurrentPerHost int           `koanf:"concurrent_per_host"`
}

// DefaultActions is no actions, on the system bus.
func DefaultActions() Actions { return Actions{Bus: "system"} }

func (c Config) validateActions(ps *problems) {
	a := c.Actions
	if a.Bus != "system" && a.Bus != "user" {
		ps.add("actions.bus", "must be system or user, got %q", a.Bus)
	}
	// The definitions are compiled by internal/action, which knows their
	// grammar; the services refuse a config whose actions do not compile.
	// What they may not do whatever their grammar: set a variable that
	// worker.env_deny refuses every order (an action is an order, and a
	// param could fill LD_PRELOAD), or run longer than any order may.
	for i, d := range a.Definitions {
		for j, e := range d.Env {
			if rule, denied := order.EnvDenied(e.Name, c.Worker.EnvDeny); denied {
				ps.add(fmt.Sprintf("actions.definitions[%d].env[%d].name", i, j),
					"%s is refused by worker.env_deny (%q), for an action's command too", e.Name, rule)
			}
		}
		if max := c.Limits.MaxTimeout; max > 0 && d.Timeout > max {
			ps.add(fmt.Sprintf("actions.definitions[%d].timeout", i), "%s is longer than limits.max_timeout (%s)", d.Timeout, max)
		}
	}
}
