package order

import "time"

// Action is what an order of kind action asks for: the action's name and
// its parameter values. The worker renders the command from its own
// config; the order carries no command of its own. Params stay as
// history; Secrets are pending inputs like env values and stdin, stored
// until the order is terminal, then erased, and never echoed.
type Action struct {
	Name    string
	Params  map[string]string
	Secrets map[string]string
	// SecretNames are the names of the secret params a run set, kept as
	// history (values never are).
	SecretNames []string
	// Limit is the run limit the API applied when recording the order
	// (the database enforces it at insert, across API replicas).
	Limit ActionLimit
}

// ActionLimit bounds the runs of one action: at most Runs per Per across
// the fleet and at most ConcurrentPerHost queued or running per host. Zero
// fields are no limit.
type ActionLimit struct {
	Runs              int
	Per               time.Duration
	ConcurrentPerHost int
}
