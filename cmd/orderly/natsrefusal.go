package main

import (
	"fmt"
	"sync"

	"github.com/orderly-run/orderly/internal/queue"
)

// natsRefusal is whether the NATS servers refuse this process's credential
// now, for a worker's systemd status. A worker whose key the servers stop
// accepting while it runs (a key replaced in place, a user removed from
// auth.conf and the servers reloaded) is cut off and reconnects for good;
// its status said "consuming the orders of host …" all the while. The
// client learns of the refusal from the servers' error (nats.go's async
// error callback, on the cut and on each reconnect refused) and of the
// acceptance from its reconnection.
type natsRefusal struct {
	credential string // natsCredentialSetting: "nats.nkey <path>", or the like

	mu      sync.Mutex
	refused error        // the servers' refusal; nil while accepted
	last    string       // what the worker last said it does
	notify  func(string) // the worker's status line out; nil until it starts
}

func newNATSRefusal(credential string) *natsRefusal {
	return &natsRefusal{credential: credential}
}

// isNATSRefusal reports whether err is the servers refusing the
// credential (rather than a network or permission error).
func isNATSRefusal(err error) bool { return queue.Refused(err) }

// refuse records a refusal, and says so when it is news.
func (r *natsRefusal) refuse(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	news := r.refused == nil || r.refused.Error() != err.Error()
	r.refused = err
	if news {
		r.sayLocked()
	}
}

// accept ends a refusal: the client connected again.
func (r *natsRefusal) accept() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refused != nil {
		r.refused = nil
		r.sayLocked()
	}
}

// status is the worker's Status: its line, unless the servers refuse the
// credential now, in which case that is the line until they accept it.
func (r *natsRefusal) status(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last = s
	if r.refused == nil {
		r.sayLocked()
	}
}

// start sets where the lines go. The lines are sent under the lock, so
// that a refusal and the worker's own line never overtake each other.
func (r *natsRefusal) start(notify func(string)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notify = notify
	if r.refused != nil {
		r.sayLocked()
	}
}

func (r *natsRefusal) sayLocked() {
	if r.notify == nil {
		return
	}
	if r.refused != nil {
		r.notify(fmt.Sprintf("refused by NATS: %v (the credential in %s; the servers' auth.conf); orders wait, reconnecting", r.refused, r.credential))
		return
	}
	if r.last != "" {
		r.notify(r.last)
	}
}
