package order

import (
	"bytes"
	"strconv"
	"time"

	"github.com/google/uuid"
)

// Kind says what a worker runs for an order.
type Kind string

// The kinds of order (DESIGN §2).
const (
	KindExec   Kind = "exec"
	KindScript Kind = "script"
	KindAction Kind = "action"
)

// Order is one execution on one host: what was asked, by whom, and what
// happened. Stdin and Env values are only held while the order is pending;
// history keeps env names only.
type Order struct {
	ID             uuid.UUID
	BatchID        *uuid.UUID
	Kind           Kind
	Host           string
	Status         Status
	Command        string
	Args           []string
	Env            map[string]string // values present only until the order starts
	EnvNames       []string
	Stdin          []byte
	StdoutEncode   Encoding
	StderrEncode   Encoding
	CaptureStdout  bool
	CaptureStderr  bool
	Timeout        time.Duration
	RunAs          string
	DryRun         bool
	Idempotent     bool
	ExpiresAt      *time.Time
	ExpiresIn      time.Duration // a deadline after the insert's now(), on the clock that judges it (InsertOrder)
	MaxOutput      int64         // per-stream cap; 0 means the worker's default
	Principal      string
	Source         string // "rest" or "nats"
	CorrelationID  string
	IdempotencyKey string
	Policy         Decision
	SubmittedAt    time.Time
	StartedAt      *time.Time
	FinishedAt     *time.Time
	Attempt        int
	StreamSeq      uint64 // the JetStream sequence it was executed from
	Worker         string // the worker instance that claimed it
	Result         *Result
	// Processes is what is known of the attempt's processes at its end:
	// how their end was verified ("group", "cgroup", "reboot") and, for an
	// interrupted order, what its successor found and killed.
	Processes map[string]any
	// Script is the runbook script a KindScript order runs; nil otherwise.
	Script *Script
	// Action is the action a KindAction order runs; nil otherwise.
	Action *Action
	// RequestSHA256 is what a retry under IdempotencyKey must ask for
	// again: RequestSum of the request as the client sent it, before the
	// server filled anything in from its configuration (intake.Submit
	// sets it when the caller has not; a runbook run sets its own, since
	// its order holds values made for that run alone: its delegated
	// token, its correlation id).
	RequestSHA256 []byte
	// LegacySHA256, when set, stands for Fingerprint as what a key
	// recorded before RequestSum existed is compared with (a runbook
	// run's own earlier form); unset, the store uses Fingerprint.
	LegacySHA256 []byte
	// Waiter, when set, is the API process waiting for the order on behalf
	// of a client that never learns its id (a compat surface's request):
	// the worker cancels the order at its claim once that process is
	// gone, instead of running it for nobody. Zero for every other order.
	Waiter uuid.UUID
	// ParentRun, when set, is the runbook run that waits for this
	// sub-runbook run (docs/runbooks.md): the worker cancels the order at
	// its claim once that run has ended, instead of running it for
	// nobody after the step that waited for it failed. Zero otherwise.
	ParentRun uuid.UUID
}

// Decision is the API policy's verdict on an order and the rules behind it.
type Decision struct {
	Decision string   `json:"decision"`
	Matched  []string `json:"matched"`
	// Deny, on an allowed exec order, is every deny regex of the rules that
	// applied. The worker matches them against the command line with the
	// path the command resolved to on the host, which only it knows
	// (DESIGN §4.3). Kept in the order's record, never shown in answers.
	Deny []DenyRule `json:"deny,omitempty"`
	// Timeout, when set, replaces an order's default timeout: the rules
	// that allowed it cap timeouts below the default (limits.default_timeout),
	// and an order that named none gets the cap instead of a refusal.
	Timeout time.Duration `json:"-"`
	// Unknown lists the keys of a recorded decision that this binary does
	// not know: an API newer than this worker wrote them, and may have
	// allowed the order counting on a check that only a newer worker
	// makes (as Deny once was). The worker refuses such an order.
	Unknown []string `json:"-"`
}

// DenyRule is one deny regex of a policy rule, as configured.
type DenyRule struct {
	Rule  string `json:"rule"`
	Regex string `json:"regex"`
}

// Result is what running an order produced.
type Result struct {
	ExitCode   *int
	Signal     string
	DurationMS int64
	Error      string
	Stdout     Output
	Stderr     Output
}

// Output is one captured stream. Content holds the kept bytes (all of them,
// or head and tail around a truncation marker when the stream passed the
// cap); Bytes and SHA256 always describe the full stream.
type Output struct {
	Content   []byte
	Bytes     int64
	Truncated bool
	SHA256    []byte
}

// TruncationMarker is what stands for the omitted middle of a stream that
// passed the cap. It is on a line of its own so that line-oriented readers
// see it as one.
func TruncationMarker(omitted int64) string {
	return "\n…[orderly: " + strconv.FormatInt(omitted, 10) + " bytes omitted]…\n"
}

// Head is the kept beginning of the stream: all of Content when it was not
// truncated, else what comes before the truncation marker, a prefix of
// what the command wrote. Nil when a truncated Content holds no marker
// that fits its size (not written by a worker).
func (o Output) Head() []byte {
	if !o.Truncated {
		return o.Content
	}
	head, _, _ := o.HeadAndTail()
	return head
}

// HeadAndTail returns what a truncated Content keeps either side of its
// truncation marker: the beginning and the end of what the command
// wrote. ok is false, and both nil, when Content holds no marker that
// fits its size.
func (o Output) HeadAndTail() (head, tail []byte, ok bool) {
	// The marker counts the bytes it stands for: Bytes less the kept ones.
	for digits := 1; digits <= 19; digits++ {
		n := len(TruncationMarker(0)) - 1 + digits
		omitted := o.Bytes - int64(len(o.Content)-n)
		if omitted <= 0 || len(strconv.FormatInt(omitted, 10)) != digits {
			continue
		}
		m := []byte(TruncationMarker(omitted))
		if i := bytes.Index(o.Content, m); i >= 0 {
			return o.Content[:i], o.Content[i+len(m):], true
		}
	}
	return nil, nil, false
}

// Continuing returns the part of a chunk of a stream, starting at offset,
// that continues the n bytes already given: nil for a repeat of them,
// and nil with gap true when bytes before the chunk were lost (a live
// stream's chunks placed by offset, as a follower of live output does).
func Continuing(offset, n int64, chunk []byte) (rest []byte, gap bool) {
	switch {
	case offset > n:
		return nil, true
	case offset+int64(len(chunk)) <= n:
		return nil, false
	default:
		return chunk[n-offset:], false
	}
}

// NewID returns a new order id: a UUIDv7, so ids sort by submission time and
// keyset pagination over id is newest-first by construction.
func NewID() uuid.UUID {
	return uuid.Must(uuid.NewV7())
}

// IDAt is the least UUIDv7 of the millisecond ms since 1970: its 48 bits
// of time, then zeros. Ids made in that millisecond sort at or after it.
func IDAt(ms int64) uuid.UUID {
	var u uuid.UUID
	for i := range 6 {
		u[i] = byte(ms >> (40 - 8*i))
	}
	return u
}
