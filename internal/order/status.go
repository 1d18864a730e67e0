// Package order is orderly's domain: orders, their specs, statuses, results
// and the closed set of errors every adapter translates into. It imports
// nothing of ours.
package order

// Status is where an order is in its life. The set is closed (DESIGN §2).
type Status string

// The statuses of an order. Terminal statuses never change again.
const (
	StatusQueued      Status = "queued"
	StatusRunning     Status = "running"
	StatusSucceeded   Status = "succeeded"
	StatusFailed      Status = "failed"
	StatusTimedOut    Status = "timed_out"
	StatusKilled      Status = "killed"
	StatusCanceled    Status = "canceled"
	StatusInterrupted Status = "interrupted"
	StatusRejected    Status = "rejected"
	StatusExpired     Status = "expired"
)

// Statuses lists every status, in the order a reader meets them.
var Statuses = []Status{
	StatusQueued, StatusRunning, StatusSucceeded, StatusFailed, StatusTimedOut,
	StatusKilled, StatusCanceled, StatusInterrupted, StatusRejected, StatusExpired,
}

// Valid reports whether s is one of the closed set.
func (s Status) Valid() bool {
	for _, v := range Statuses {
		if s == v {
			return true
		}
	}
	return false
}

// Terminal reports whether s can never change again.
func (s Status) Terminal() bool {
	return s != StatusQueued && s != StatusRunning && s.Valid()
}
