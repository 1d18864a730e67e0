package api

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"sort"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
)

// SubmitRequest is the body of POST /v1/orders and of a NATS submission.
type SubmitRequest struct {
	Kind             string            `json:"kind"`
	Host             string            `json:"host"`
	Hosts            []string          `json:"hosts"`
	Command          string            `json:"command"`
	Args             []string          `json:"args"`
	Env              map[string]string `json:"env"`
	Stdin            *StreamIn         `json:"stdin"`
	Stdout           *StreamOut        `json:"stdout"`
	Stderr           *StreamOut        `json:"stderr"`
	TimeoutSeconds   float64           `json:"timeout_seconds"`
	RunAs            string            `json:"run_as"`
	DryRun           bool              `json:"dry_run"`
	Idempotent       bool              `json:"idempotent"`
	ExpiresInSeconds float64           `json:"expires_in_seconds"`
	DeliverBy        *time.Time        `json:"deliver_by"`
	MaxOutputBytes   int64             `json:"max_output_bytes"`
	CorrelationID    string            `json:"correlation_id"`
}

// StreamIn is stdin: either a JSON string (text) or {content, encode}.
type StreamIn struct {
	Content string  `json:"content"`
	Encode  *string `json:"encode"`
}

func (s *StreamIn) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &s.Content)
	}
	type plain StreamIn
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode((*plain)(s))
}

// StreamOut says whether and how to capture stdout or stderr.
// StreamOut says whether and how to capture stdout or stderr.
type StreamOut struct {
	Capture *bool   `json:"capture"`
	Encode  *string `json:"encode"`
}

// toOrder turns a request into a domain order, decoding stdin and
// checking the encodings. Limits are checked later by order.Validate.
func (req *SubmitRequest) toOrder() (*order.Order, error) {
	o := &order.Order{
		Kind: order.Kind(req.Kind), Host: req.Host, Command: req.Command, Args: req.Args, Env: req.Env,
		RunAs: req.RunAs, DryRun: req.DryRun, Idempotent: req.Idempotent, MaxOutput: req.MaxOutputBytes,
		CorrelationID: req.CorrelationID, CaptureStdout: true, CaptureStderr: true,
	}
	if req.TimeoutSeconds < 0 {
		return nil, order.FieldError(order.CodeInvalid, "timeout_seconds", "timeout_seconds must not be negative")
	}
	if req.TimeoutSeconds > 1e7 {
		return nil, order.FieldError(order.CodeUnprocessable, "timeout_seconds", "timeout_seconds is too large")
	}
	o.Timeout = time.Duration(req.TimeoutSeconds * float64(time.Second))
	if req.TimeoutSeconds > 0 {
		o.Timeout = max(o.Timeout, 1) // under a nanosecond is not "none": order.Validate refuses it
	}
	if req.Stdin != nil {
		enc := order.EncodeText
		if req.Stdin.Encode != nil {
			e, err := order.ParseEncoding(*req.Stdin.Encode)
			if err != nil {
				return nil, order.FieldError(order.CodeInvalid, "stdin.encode", "%v", err)
			}
			enc = e
		}
		b, err := order.Decode(req.Stdin.Content, enc)
		if err != nil {
			return nil, order.FieldError(order.CodeInvalid, "stdin.content", "stdin is not valid %s: %v", enc, err)
		}
		o.Stdin = b
	}
	for _, s := range []struct {
		name    string
		in      *StreamOut
		capture *bool
		enc     *order.Encoding
	}{{"stdout", req.Stdout, &o.CaptureStdout, &o.StdoutEncode}, {"stderr", req.Stderr, &o.CaptureStderr, &o.StderrEncode}} {
		if s.in == nil {
			continue
		}
		if s.in.Capture != nil {
			*s.capture = *s.in.Capture
		}
		if s.in.Encode != nil {
			e, err := order.ParseEncoding(*s.in.Encode)
			if err != nil {
				return nil, order.FieldError(order.CodeInvalid, s.name+".encode", "%v", err)
			}
			*s.enc = e
		}
	}
	if req.ExpiresInSeconds < 0 {
		return nil, order.FieldError(order.CodeInvalid, "expires_in_seconds", "expires_in_seconds must not be negative")
	}
	if req.ExpiresInSeconds > 0 {
		if req.ExpiresInSeconds > 1e8 {
			return nil, order.FieldError(order.CodeUnprocessable, "expires_in_seconds", "expires_in_seconds is too large")
		}
		o.ExpiresIn = max(time.Duration(req.ExpiresInSeconds*float64(time.Second)), time.Microsecond)
	}
	// Answers write times in UTC as RFC 3339, whose year has four digits:
	// a deliver_by past 9999 there (9999-12-31T23:59:59-23:59 is one) was
	// stored, then no answer or listing holding the order could be written.
	if t := req.DeliverBy; t != nil && (t.UTC().Year() < 0 || t.UTC().Year() > 9999) {
		return nil, order.FieldError(order.CodeUnprocessable, "deliver_by", "deliver_by must fall within the years 0000-9999 in UTC")
	}
	o.ExpiresAt = req.DeliverBy
	for k := range o.Env {
		o.EnvNames = append(o.EnvNames, k)
	}
	sort.Strings(o.EnvNames)
	return o, nil
}

// Order is an order as the API shows it (DESIGN §3). Env values
// are never shown: names only.
type Order struct {
	ID            uuid.UUID    `json:"id"`
	BatchID       *uuid.UUID   `json:"batch_id"`
	Kind          order.Kind   `json:"kind"`
	Host          string       `json:"host"`
	Status        order.Status `json:"status"`
	Command       string       `json:"command"`
	Args          []string     `json:"args"`
	EnvNames      []string     `json:"env_names"`
	TimeoutSecs   float64      `json:"timeout_seconds"`
	RunAs         string       `json:"run_as"`
	DryRun        bool         `json:"dry_run"`
	Idempotent    bool         `json:"idempotent"`
	ExpiresAt     *time.Time   `json:"expires_at,omitempty"`
	Principal     string       `json:"principal"`
	Source        string       `json:"source"`
	CorrelationID string       `json:"correlation_id"`
	Runbook       string       `json:"runbook,omitempty"`        // the runbook a script order ran
	RunbookSHA256 string       `json:"runbook_sha256,omitempty"` // the version of its text
	Action        *OrderAction `json:"action,omitempty"`         // the action an action order ran (actions.go)
	SubmittedAt   time.Time    `json:"submitted_at"`
	StartedAt     *time.Time   `json:"started_at"`
	FinishedAt    *time.Time   `json:"finished_at"`
	Attempt       int          `json:"attempt"`
	StreamSeq     uint64       `json:"stream_seq,omitempty"`
	Worker        string       `json:"worker,omitempty"` // the worker instance that ran it
	// Processes says how the end of the order's processes was verified
	// ("group", "cgroup", "reboot") and, for an interrupted order, what the
	// worker that took over found and killed.
	Processes processMap    `json:"processes,omitempty"`
	Policy    Decision      `json:"policy"`
	Cancel    *Cancellation `json:"cancel,omitempty"` // who asked to cancel it (cancel.go)
	Result    *Result       `json:"result"`
}

// Decision is the policy's verdict on an order as answers show it: the
// deny rules an order carries for its worker (order.Decision.Deny) are
// not the client's to read.
type Decision struct {
	Decision string   `json:"decision"`
	Matched  []string `json:"matched"`
}

// Result is how an order ran.
type Result struct {
	ExitCode   *int    `json:"exit_code"`
	Signal     *string `json:"signal"`
	DurationMS int64   `json:"duration_ms"`
	Error      *string `json:"error"`
	// Code is the stable code of Error when orderly wrote it from one of
	// its errors (a refusal by the host's policy: forbidden,
	// unprocessable, …), for clients to switch on instead of the text.
	Code   order.Code `json:"code,omitempty"`
	Stdout Stream     `json:"stdout"`
	Stderr Stream     `json:"stderr"`
}

// Stream is one captured output stream: the kept content in its encoding,
// and the size, truncation and SHA-256 of the full stream.
type Stream struct {
	Content   string  `json:"content"`
	Encode    *string `json:"encode"`
	Bytes     int64   `json:"bytes"`
	Truncated bool    `json:"truncated"`
	SHA256    string  `json:"sha256"`
	// Switched is true when text was asked for but the bytes are not UTF-8,
	// so the content was sent as base64 instead (nothing replaced or lost).
	Switched bool `json:"switched_to_base64,omitempty"`
}

func toResponse(o *order.Order) Order {
	r := Order{
		ID: o.ID, BatchID: o.BatchID, Kind: o.Kind, Host: o.Host, Status: o.Status, Command: o.Command,
		Args: o.Args, EnvNames: o.EnvNames, TimeoutSecs: o.Timeout.Seconds(),
		RunAs: o.RunAs, DryRun: o.DryRun, Idempotent: o.Idempotent, ExpiresAt: o.ExpiresAt,
		Principal: o.Principal, Source: o.Source, CorrelationID: o.CorrelationID,
		SubmittedAt: o.SubmittedAt, StartedAt: o.StartedAt, FinishedAt: o.FinishedAt,
		Attempt: o.Attempt, StreamSeq: o.StreamSeq, Policy: Decision{Decision: o.Policy.Decision, Matched: o.Policy.Matched}, Worker: o.Worker, Processes: o.Processes,
	}
	if r.Args == nil {
		r.Args = []string{}
	}
	if o.Script != nil {
		r.Runbook, r.RunbookSHA256 = o.Script.Runbook, o.Script.SHA256
	}
	r.Action = orderActionOf(o.Action)
	if r.EnvNames == nil {
		r.EnvNames = []string{}
	}
	if r.Policy.Matched == nil {
		r.Policy.Matched = []string{}
	}
	if res := o.Result; res != nil {
		rr := &Result{ExitCode: res.ExitCode, DurationMS: res.DurationMS,
			Stdout: toStream(res.Stdout, o.StdoutEncode), Stderr: toStream(res.Stderr, o.StderrEncode)}
		if res.Signal != "" {
			rr.Signal = &res.Signal
		}
		if res.Error != "" {
			rr.Error = &res.Error
			rr.Code, _ = order.CodeOfText(res.Error)
		}
		r.Result = rr
	}
	return r
}

// hexString is hex.EncodeToString of a digest, in one allocation (the
// string) instead of two (docs/benchmarks.md, "The sync submit, counted").
func hexString(sum []byte) string {
	var buf [2 * 64]byte
	if 2*len(sum) > len(buf) {
		return hex.EncodeToString(sum)
	}
	return string(buf[:hex.Encode(buf[:], sum)])
}

func toStream(out order.Output, want order.Encoding) Stream {
	content, got := order.Encode(out.Content, want)
	s := Stream{Content: content, Bytes: out.Bytes, Truncated: out.Truncated, SHA256: hexString(out.SHA256)}
	if got != order.EncodeText {
		e := string(got)
		s.Encode = &e
	}
	s.Switched = want == order.EncodeText && got == order.EncodeBase64
	return s
}
