package client

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// The types here are the API's wire format as api/openapi.yaml describes
// it. They are the client's own (importing package api would link the
// whole server); TestWireTypes keeps their JSON fields equal to the
// server's.

// Status is an order's status. Queued and running can still change; every
// other status is final.
type Status string

// The statuses of an order.
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

// Terminal reports whether the status can no longer change. An unknown
// status counts as final, so a newer server cannot make a client wait for
// ever.
func (s Status) Terminal() bool { return s != StatusQueued && s != StatusRunning && s != "" }

// SubmitRequest is the body of POST /v1/orders. Give Host, or Hosts for a
// fan-out; zero fields take the server's defaults.
type SubmitRequest struct {
	Kind             string            `json:"kind,omitempty"`
	Host             string            `json:"host,omitempty"`
	Hosts            []string          `json:"hosts,omitempty"`
	Command          string            `json:"command"`
	Args             []string          `json:"args"`
	Env              map[string]string `json:"env,omitempty"`
	Stdin            *StreamIn         `json:"stdin,omitempty"`
	Stdout           *StreamOut        `json:"stdout,omitempty"`
	Stderr           *StreamOut        `json:"stderr,omitempty"`
	TimeoutSeconds   float64           `json:"timeout_seconds,omitempty"`
	RunAs            string            `json:"run_as,omitempty"`
	DryRun           bool              `json:"dry_run,omitempty"`
	Idempotent       bool              `json:"idempotent,omitempty"`
	ExpiresInSeconds float64           `json:"expires_in_seconds,omitempty"`
	DeliverBy        *time.Time        `json:"deliver_by,omitempty"`
	MaxOutputBytes   int64             `json:"max_output_bytes,omitempty"`
	CorrelationID    string            `json:"correlation_id,omitempty"`
}

// StreamIn is an order's standard input: Content in Encode (nil: text).
// EncodeStdin makes one from any bytes.
type StreamIn struct {
	Content string  `json:"content"`
	Encode  *string `json:"encode"`
}

// StreamOut says whether to capture stdout or stderr and how to return it
// (Encode "base64" or "base85"; nil is text).
type StreamOut struct {
	Capture *bool   `json:"capture,omitempty"`
	Encode  *string `json:"encode,omitempty"`
}

// Order is an order as the API shows it. Environment values are never
// shown, only their names.
type Order struct {
	ID            uuid.UUID      `json:"id"`
	BatchID       *uuid.UUID     `json:"batch_id"`
	Kind          string         `json:"kind"`
	Host          string         `json:"host"`
	Status        Status         `json:"status"`
	Command       string         `json:"command"`
	Args          []string       `json:"args"`
	EnvNames      []string       `json:"env_names"`
	TimeoutSecs   float64        `json:"timeout_seconds"`
	RunAs         string         `json:"run_as"`
	DryRun        bool           `json:"dry_run"`
	Idempotent    bool           `json:"idempotent"`
	ExpiresAt     *time.Time     `json:"expires_at,omitempty"`
	Principal     string         `json:"principal"`
	Source        string         `json:"source"`
	CorrelationID string         `json:"correlation_id"`
	Runbook       string         `json:"runbook,omitempty"`
	RunbookSHA256 string         `json:"runbook_sha256,omitempty"`
	Action        *OrderAction   `json:"action,omitempty"`
	SubmittedAt   time.Time      `json:"submitted_at"`
	StartedAt     *time.Time     `json:"started_at"`
	FinishedAt    *time.Time     `json:"finished_at"`
	Attempt       int            `json:"attempt"`
	StreamSeq     uint64         `json:"stream_seq,omitempty"`
	Worker        string         `json:"worker,omitempty"`
	Processes     map[string]any `json:"processes,omitempty"`
	Policy        Decision       `json:"policy"`
	Cancel        *Cancellation  `json:"cancel,omitempty"`
	Result        *Result        `json:"result"`

	// Raw is the order's JSON exactly as the API sent it, for callers
	// that pass it on (the CLI's --json).
	Raw json.RawMessage `json:"-"`
	// ETag is the entity tag GET /v1/orders/{id} answered with this
	// order (Get, Refresh); "" for an order read any other way. Refresh
	// sends it back, so that an unchanged order is not sent again.
	ETag string `json:"-"`
	// Replayed, of an order a submission returned (Submit, RunAction,
	// ExecuteRunbook), says it is the order an earlier submission with
	// the same IdempotencyKey recorded (the API's Idempotent-Replayed
	// header): this one was a retry and ran nothing; of a fan-out's
	// order, that its host's order is one the key recorded (Batch.Replayed).
	// False for an order read any other way.
	Replayed bool `json:"-"`
}

// UnmarshalJSON decodes an order and keeps its JSON in Raw.
func (o *Order) UnmarshalJSON(b []byte) error {
	type plain Order
	if err := json.Unmarshal(b, (*plain)(o)); err != nil {
		return err
	}
	o.Raw = append(json.RawMessage(nil), b...)
	return nil
}

// OrderAction is the action an order of kind action ran, with its params'
// values; secret params by name only.
type OrderAction struct {
	Name         string            `json:"name"`
	Params       map[string]string `json:"params"`
	SecretParams []string          `json:"secret_params"`
}

// Decision is the API policy's decision on an order and the rules that
// matched.
type Decision struct {
	Decision string   `json:"decision"`
	Matched  []string `json:"matched"`
}

// Cancellation is who asked to cancel an order, when, with which signal.
type Cancellation struct {
	Actor       string    `json:"actor"`
	Signal      string    `json:"signal"`
	RequestedAt time.Time `json:"requested_at"`
	// HostOnline is set only in Cancel's answer for a running order:
	// whether a worker served the order's host (false: nothing signals
	// it until a worker for the host starts). Nil from an API that does
	// not say.
	HostOnline *bool `json:"host_online,omitempty"`
}

// Result is how an order ran.
type Result struct {
	ExitCode   *int    `json:"exit_code"`
	Signal     *string `json:"signal"`
	DurationMS int64   `json:"duration_ms"`
	Error      *string `json:"error"`
	// Code is Error's stable code when it has one (a refusal by the
	// host's policy: CodeForbidden, CodeUnprocessable, …), "" otherwise:
	// switch on it, never on Error's text.
	Code   Code   `json:"code,omitempty"`
	Stdout Stream `json:"stdout"`
	Stderr Stream `json:"stderr"`
}

// Stream is one captured output stream: the kept content in its encoding,
// and the size, truncation and SHA-256 of the whole stream. Decode gives
// the bytes. A listing read with ListOptions.WithoutOutputs has no
// content: Content is "" whatever Bytes says.
type Stream struct {
	Content   string  `json:"content"`
	Encode    *string `json:"encode"`
	Bytes     int64   `json:"bytes"`
	Truncated bool    `json:"truncated"`
	SHA256    string  `json:"sha256"`
	Switched  bool    `json:"switched_to_base64,omitempty"`
}

// Chunk is a piece of live output (a stdout or stderr event).
type Chunk struct {
	Data   string  `json:"data"`
	Encode *string `json:"encode"`
	// Offset is where in its stream the chunk starts; nil from an API
	// older than it.
	Offset *int64 `json:"offset,omitempty"`
	// LiveCap is on the chunk that reached the order's live output cap
	// (bytes of stdout and stderr together): nothing more comes live.
	LiveCap *int64 `json:"live_cap,omitempty"`
}

// OrderList is a page of orders; NextCursor (nil on the last page) asks
// for the next.
type OrderList struct {
	Orders     []Order `json:"orders"`
	NextCursor *string `json:"next_cursor"`

	// Raw is the page's JSON as the API sent it.
	Raw json.RawMessage `json:"-"`
}

// Batch is a fan-out: its orders, the count per status, and the hosts
// that got no order with the reason (counted as "refused").
type Batch struct {
	BatchID uuid.UUID      `json:"batch_id"`
	Counts  map[string]int `json:"counts"`
	Orders  []Order        `json:"orders"`
	Refused []HostRefusal  `json:"refused,omitempty"`
	// Replayed, of a fan-out's Submit, lists the orders of the batch
	// that an earlier submission with the same IdempotencyKey recorded
	// (each also has Order.Replayed); the others are new. Empty for a
	// batch read with Batch.
	Replayed []uuid.UUID `json:"replayed,omitempty"`

	// Raw is the batch's JSON as the API sent it.
	Raw json.RawMessage `json:"-"`
	// ETag is the entity tag GET /v1/batches/{id} answered with this
	// batch (Batch, RefreshBatch); "" for a submission's batch.
	ETag string `json:"-"`
	// withoutOutputs: read with BatchOptions.WithoutOutputs, and
	// refreshed so.
	withoutOutputs bool
}

// HostRefusal is a host of a fan-out that got no order, and why.
type HostRefusal struct {
	Host  string      `json:"host"`
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the inside of the API's error envelope.
type ErrorDetail struct {
	Code    Code           `json:"code"`
	Message string         `json:"message"`
	Details map[string]any `json:"details,omitempty"`
}

// PostgresOutage is since when a host's worker has failed to reach
// PostgreSQL, how often and (for an admin or an auditor) its last error.
type PostgresOutage struct {
	Since    time.Time `json:"since"`
	Error    string    `json:"error,omitempty"`
	Failures int       `json:"failures"`
}

// Host is a worker host: online now or seen before. QueueDepth, Queued
// and Running are only filled by Client.Host.
type Host struct {
	Host         string     `json:"host"`
	Online       bool       `json:"online"`
	LastSeen     *time.Time `json:"last_seen"`
	Version      string     `json:"version"`
	Instance     string     `json:"instance"`
	CurrentOrder *uuid.UUID `json:"current_order"`
	QueueDepth   *int       `json:"queue_depth,omitempty"`
	Queued       []Order    `json:"queued,omitempty"`
	Running      *Order     `json:"running,omitempty"`
	// Standby is a worker waiting to take the host over; nil when none
	// waits (or the API is older than standby reports).
	Standby *Standby `json:"standby,omitempty"`
	// RestoreGuard is "on" while the host's worker reads and writes its
	// claim mark, "off: " and why when it cannot; "" offline, or from a
	// worker or an API older than it.
	RestoreGuard string `json:"restore_guard,omitempty"`
	// PostgresUnreachable is set while the host's online worker cannot
	// reach PostgreSQL: it keeps the host and runs nothing. Nil while it
	// can, offline, or from a worker or an API older than it.
	PostgresUnreachable *PostgresOutage `json:"postgres_unreachable,omitempty"`
	// Maintenance is set while an admin has the host in maintenance: new
	// orders for it are refused with CodeHostInMaintenance.
	Maintenance *Maintenance `json:"maintenance,omitempty"`
	// Registry is RegistryUnavailable when NATS did not answer the API's
	// read of the heartbeats in time: the host is as PostgreSQL knows it,
	// and whether it is online (Online is false) and who stands by are
	// unknown. "" otherwise.
	Registry string `json:"registry,omitempty"`

	// Raw is the host's JSON as the API sent it.
	Raw json.RawMessage `json:"-"`
	// ETag is the entity tag GET /v1/hosts/{host} answered with this
	// host (Host, RefreshHost); "" for a host a listing returned.
	ETag string `json:"-"`
}

// Maintenance is who put a host in maintenance, when and why.
type Maintenance struct {
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
	By     string    `json:"by"`
}

// MaintenanceState answers StartMaintenance and EndMaintenance: the
// host's maintenance now (nil when out of it) and how many of its orders
// wait queued, which the switch leaves alone.
type MaintenanceState struct {
	Host        string       `json:"host"`
	Maintenance *Maintenance `json:"maintenance"`
	QueueDepth  int          `json:"queue_depth"`
}

// Standby is a worker waiting for a host's lease.
type Standby struct {
	Instance     string    `json:"instance"`
	Version      string    `json:"version"`
	WaitingSince time.Time `json:"waiting_since"`
	LastSeen     time.Time `json:"last_seen"`
}

// UnmarshalJSON decodes a host and keeps its JSON in Raw.
func (h *Host) UnmarshalJSON(b []byte) error {
	type plain Host
	if err := json.Unmarshal(b, (*plain)(h)); err != nil {
		return err
	}
	h.Raw = append(json.RawMessage(nil), b...)
	return nil
}

// RegistryUnavailable is Host.Registry and HostList.Registry when the
// API listed hosts without their heartbeats (NATS did not answer).
const RegistryUnavailable = "unavailable"

// HostList is the answer of GET /v1/hosts.
type HostList struct {
	Hosts []Host `json:"hosts"`
	// Registry is RegistryUnavailable when every host's online and
	// standby are unknown (Host.Registry).
	Registry string `json:"registry,omitempty"`

	// Raw is the list's JSON as the API sent it.
	Raw json.RawMessage `json:"-"`
}
