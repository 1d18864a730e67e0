package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// SubmitOptions are the headers of a submission.
type SubmitOptions struct {
	// Wait asks the API to answer when the order (or every order of a
	// fan-out) has finished, up to Wait (the server caps it with
	// http.max_wait). Zero answers at once. Follow waits for any time.
	// No more is asked than the context's deadline leaves (less a
	// second for the answer), so that the order comes back, still
	// running, before the context ends.
	Wait time.Duration
	// IdempotencyKey makes a retry return the first order instead of
	// running again (printable text of at most 200 bytes).
	IdempotencyKey string
	// IfMatch, for RunAction and ExecuteRunbook, runs the action or the
	// runbook only while its definition is still the one whose ETag it
	// is (Action, Runbook); else nothing runs and the error's code is
	// CodePreconditionFailed.
	IfMatch string
	// CorrelationID is sent as X-Correlation-Id: the order's (each order
	// of a fan-out's) correlation id, which ListOptions.Correlation finds
	// it by. A body's correlation_id field wins over it; an action
	// run has no such field. Outside what an IdempotencyKey binds.
	CorrelationID string
}

// header is the submission's headers.
func (o SubmitOptions) header() http.Header {
	hdr := http.Header{}
	if o.IdempotencyKey != "" {
		hdr.Set("Idempotency-Key", o.IdempotencyKey)
	}
	if o.IfMatch != "" {
		hdr.Set("If-Match", o.IfMatch)
	}
	if o.CorrelationID != "" {
		hdr.Set("X-Correlation-Id", o.CorrelationID)
	}
	if o.Wait > 0 {
		hdr.Set("Prefer", "wait="+strconv.FormatFloat(o.Wait.Seconds(), 'f', -1, 64))
	}
	return hdr
}

// within caps the wait at what ctx's deadline leaves, less a second for
// the answer: past the deadline the answer, and with it the order's id,
// would be lost while the order runs on.
func (o SubmitOptions) within(ctx context.Context) SubmitOptions {
	if dl, ok := ctx.Deadline(); ok && o.Wait > 0 {
		o.Wait = max(min(o.Wait, time.Until(dl)-time.Second), 0)
	}
	return o
}

// Submission is the API's answer to a submission: Order for one host,
// Batch for a fan-out (Hosts). Finished says the API answered 200: the
// order (every order of the batch) has finished.
type Submission struct {
	Order    *Order
	Batch    *Batch
	Finished bool
	// Replayed says the order is the one an earlier submission with the
	// same IdempotencyKey recorded (the API's Idempotent-Replayed
	// header): this one was a retry, answered with the first's order,
	// even if the server's rules would refuse it now (docs/client.md).
	// Of a fan-out, it says every order of the batch answered is an
	// earlier submission's: the retry made none (one that reached hosts
	// the first try did not is not marked, and Batch.Replayed and each
	// order's Order.Replayed say which of its orders are). Order.Replayed
	// says the same of a one-host submission.
	Replayed bool
	// NoWorker is, for a waited submission (SubmitOptions.Wait) whose
	// order is still queued when the wait ended, why it may stay so: no
	// worker serves its host ("none online; last seen <RFC 3339 time>"
	// or "none online; never seen", the API's Orderly-Worker header).
	// Empty otherwise.
	NoWorker string
	// Raw is the answer's JSON as the API sent it.
	Raw json.RawMessage
}

// Submit sends an order (or a fan-out) and returns the API's answer.
func (c *Client) Submit(ctx context.Context, req SubmitRequest, opts SubmitOptions) (*Submission, error) {
	if req.Args == nil {
		req.Args = []string{}
	}
	opts = opts.within(ctx)
	raw, status, hdr, err := c.callHeader(ctx, request{method: http.MethodPost, path: "/v1/orders", body: req, header: opts.header(), wait: opts.Wait}, nil)
	if err != nil {
		return nil, err
	}
	sub := &Submission{Raw: raw, Finished: status == http.StatusOK, Replayed: hdr.Get("Idempotent-Replayed") == "true",
		NoWorker: hdr.Get("Orderly-Worker")}
	// A fan-out answers with a batch (orders, no id), one host with an order.
	var probe struct {
		ID     string            `json:"id"`
		Orders []json.RawMessage `json:"orders"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, fmt.Errorf("POST /v1/orders: the API answered with something that is not JSON: %v", err)
	}
	if probe.ID == "" && probe.Orders != nil {
		var b Batch
		if err := json.Unmarshal(raw, &b); err != nil {
			return nil, fmt.Errorf("POST /v1/orders: the API's answer is not the expected batch: %v", err)
		}
		for i := range b.Orders {
			if b.Orders[i].ID == uuid.Nil {
				return nil, fmt.Errorf("POST /v1/orders: order %d of the batch has no id", i)
			}
			b.Orders[i].Replayed = slices.Contains(b.Replayed, b.Orders[i].ID)
		}
		b.Raw = raw
		sub.Batch = &b
		return sub, nil
	}
	var o Order
	if err := json.Unmarshal(raw, &o); err != nil || o.ID == uuid.Nil {
		return nil, fmt.Errorf("POST /v1/orders: the API's answer has no order id")
	}
	o.Replayed = sub.Replayed
	sub.Order = &o
	return sub, nil
}

// Get reads one order. Its ETag is the answer's, for Refresh.
func (c *Client) Get(ctx context.Context, id string) (*Order, error) {
	o, _, err := c.getOrder(ctx, id, "")
	return o, err
}

// Refresh reads prev's order again, for a caller that polls it: it sends
// prev.ETag in If-None-Match, and while the order is unchanged the API
// answers 304 without a body and Refresh returns prev itself with
// changed false; else it returns the order as it is now (with its new
// ETag) and changed true. Polling a finished order with megabytes of
// output then costs a few hundred bytes a read. A prev without an ETag
// (one a submission or a list returned) is read in full, as Get does.
func (c *Client) Refresh(ctx context.Context, prev *Order) (o *Order, changed bool, err error) {
	return refreshed(prev)(c.getOrder(ctx, prev.ID.String(), prev.ETag))
}

// refreshed turns a conditional read's outcome into a Refresh's: prev
// itself, unchanged, on a 304; else what was read, changed.
func refreshed[T any](prev *T) func(cur *T, notModified bool, err error) (*T, bool, error) {
	return func(cur *T, notModified bool, err error) (*T, bool, error) {
		switch {
		case err != nil:
			return nil, false, err
		case notModified:
			return prev, false, nil
		}
		return cur, true, nil
	}
}

// getOrder is GET /v1/orders/{id}, with If-None-Match: etag when etag is
// not "". notModified reports a 304 (o is then nil).
func (c *Client) getOrder(ctx context.Context, id, etag string) (o *Order, notModified bool, err error) {
	r := request{method: http.MethodGet, path: "/v1/orders/" + pathID(id)}
	if etag != "" {
		r.header = http.Header{"If-None-Match": {etag}}
	}
	resp, err := c.send(ctx, r)
	if err != nil {
		return nil, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified {
		return nil, true, nil
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, false, &TransportError{URL: c.base, Err: fmt.Errorf("read GET %s: %w", r.path, err)}
	}
	o = new(Order)
	if err := json.Unmarshal(b, o); err != nil {
		return nil, false, fmt.Errorf("GET %s: the API answered with something that is not the expected JSON: %v", r.path, err)
	}
	o.ETag = resp.Header.Get("ETag")
	return o, false, nil
}

// ListOptions filter GET /v1/orders. Zero fields do not filter.
type ListOptions struct {
	Host      string
	Status    []Status
	Principal string
	Batch     string
	// Correlation is a correlation id: the orders recorded with it
	// (SubmitOptions.CorrelationID, a body's correlation_id, a runbook
	// chain's).
	Correlation string
	Since       time.Time
	Until       time.Time
	// Limit is the page size (1-1000; 0 is the server's, 50).
	Limit int
	// Cursor is a page's NextCursor, to read the page after it.
	Cursor string
	// WithoutOutputs asks for the orders without their outputs' contents
	// (outputs=none), for a program that shows none: each Stream's
	// Content is "" while Bytes, Truncated and SHA256 are as ever, and
	// Encode is the encoding the order asked for. A page then weighs
	// kilobytes, not the megabytes of output it may hold. (An API older
	// than the option ignores it and sends the contents.)
	WithoutOutputs bool
}

func (o ListOptions) query() url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"host": o.Host, "principal": o.Principal, "batch": o.Batch, "correlation": o.Correlation, "cursor": o.Cursor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if len(o.Status) > 0 {
		s := make([]string, len(o.Status))
		for i, st := range o.Status {
			s[i] = string(st)
		}
		q.Set("status", strings.Join(s, ","))
	}
	for k, t := range map[string]time.Time{"since": o.Since, "until": o.Until} {
		if !t.IsZero() {
			q.Set(k, t.UTC().Format(time.RFC3339Nano))
		}
	}
	if o.Limit != 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.WithoutOutputs {
		q.Set("outputs", "none")
	}
	return q
}

// List reads one page of orders, newest first.
func (c *Client) List(ctx context.Context, opts ListOptions) (*OrderList, error) {
	return c.listPage(ctx, "/v1/orders", opts)
}

// listPage reads one page of a listing of orders at path (GET
// /v1/orders, a runbook's history).
func (c *Client) listPage(ctx context.Context, path string, opts ListOptions) (*OrderList, error) {
	var l OrderList
	raw, _, err := c.call(ctx, request{method: http.MethodGet, path: path, query: opts.query()}, &l)
	if err != nil {
		return nil, err
	}
	l.Raw = raw
	return &l, nil
}

// Orders iterates over every order that matches opts, newest first,
// reading page after page as the loop goes on. An error ends the
// iteration with (nil, err).
func (c *Client) Orders(ctx context.Context, opts ListOptions) iter.Seq2[*Order, error] {
	return func(yield func(*Order, error) bool) {
		for {
			page, err := c.List(ctx, opts)
			if err != nil {
				yield(nil, err)
				return
			}
			for i := range page.Orders {
				if !yield(&page.Orders[i], nil) {
					return
				}
			}
			if page.NextCursor == nil || *page.NextCursor == "" {
				return
			}
			opts.Cursor = *page.NextCursor
		}
	}
}

// Cancel cancels a queued order, or sends signal ("" is SIGTERM; SIGHUP,
// SIGINT, SIGKILL, SIGUSR1 and SIGUSR2 are allowed) to a running one. It
// returns the order as it is then: canceled, or still running with its
// Cancel request recorded. A finished order is an *Error with
// CodeConflict.
func (c *Client) Cancel(ctx context.Context, id, signal string) (*Order, error) {
	var body any
	if signal != "" {
		body = map[string]string{"signal": signal}
	}
	var o Order
	if _, _, err := c.call(ctx, request{method: http.MethodPost, path: "/v1/orders/" + pathID(id) + "/cancel", body: body}, &o); err != nil {
		return nil, err
	}
	return &o, nil
}

// Batch reads a fan-out: its orders, oldest first, and the count per
// status.
func (c *Client) Batch(ctx context.Context, id string) (*Batch, error) {
	b, _, err := c.getBatch(ctx, id, "", false)
	return b, err
}

// BatchOptions are Batch's options.
type BatchOptions struct {
	// WithoutOutputs asks for the orders without their outputs' contents
	// (outputs=none), as ListOptions.WithoutOutputs does: a poller that
	// only watches the statuses is not sent every finished order's
	// output again whenever another order changes.
	WithoutOutputs bool
}

// BatchWith is Batch with options; RefreshBatch of its batch keeps them.
func (c *Client) BatchWith(ctx context.Context, id string, opts BatchOptions) (*Batch, error) {
	b, _, err := c.getBatch(ctx, id, "", opts.WithoutOutputs)
	return b, err
}

// RefreshBatch reads prev's batch again, as Refresh does an order: while
// none of its orders changed the API answers 304 with no body and
// RefreshBatch returns prev itself with changed false; else the batch as
// it is now, with its new ETag. A prev without an ETag (a submission's
// batch) is read in full.
func (c *Client) RefreshBatch(ctx context.Context, prev *Batch) (b *Batch, changed bool, err error) {
	return refreshed(prev)(c.getBatch(ctx, prev.BatchID.String(), prev.ETag, prev.withoutOutputs))
}

// getBatch is GET /v1/batches/{id}, with If-None-Match: etag when etag
// is not "" and outputs=none when withoutOutputs. notModified reports a
// 304 (b is then nil).
func (c *Client) getBatch(ctx context.Context, id, etag string, withoutOutputs bool) (b *Batch, notModified bool, err error) {
	b = &Batch{withoutOutputs: withoutOutputs}
	var raw json.RawMessage
	path := "/v1/batches/" + pathID(id)
	if withoutOutputs {
		path += "?outputs=none"
	}
	tag, notModified, err := c.getIfNoneMatch(ctx, path, etag, &raw)
	if err != nil || notModified {
		return nil, notModified, err
	}
	if err := json.Unmarshal(raw, b); err != nil {
		return nil, false, fmt.Errorf("GET /v1/batches/%s: the API answered with something that is not the expected JSON: %v", pathID(id), err)
	}
	b.Raw, b.ETag = raw, tag
	return b, false, nil
}

// Hosts lists every host ever seen, with who is online now.
func (c *Client) Hosts(ctx context.Context) (*HostList, error) {
	var l HostList
	raw, _, err := c.call(ctx, request{method: http.MethodGet, path: "/v1/hosts"}, &l)
	if err != nil {
		return nil, err
	}
	l.Raw = raw
	return &l, nil
}

// Host reads one host with its running order and its queue in execution
// order.
func (c *Client) Host(ctx context.Context, name string) (*Host, error) {
	h, _, err := c.getHost(ctx, name, "")
	return h, err
}

// RefreshHost reads prev's host again, as Refresh does an order: while
// the host, its running order and its queue are unchanged the API
// answers 304 with no body and RefreshHost returns prev itself with
// changed false; else the host as it is now, with its new ETag.
func (c *Client) RefreshHost(ctx context.Context, prev *Host) (h *Host, changed bool, err error) {
	return refreshed(prev)(c.getHost(ctx, prev.Host, prev.ETag))
}

// getHost is GET /v1/hosts/{host}, with If-None-Match: etag when etag is
// not "". notModified reports a 304 (h is then nil).
func (c *Client) getHost(ctx context.Context, name, etag string) (h *Host, notModified bool, err error) {
	h = new(Host)
	tag, notModified, err := c.getIfNoneMatch(ctx, "/v1/hosts/"+pathID(name), etag, h)
	if err != nil || notModified {
		return nil, notModified, err
	}
	h.ETag = tag
	return h, false, nil
}

// ForgetHost is DELETE /v1/hosts/{host} (admin): a host gone for good
// leaves the hosts list and the fleet gauges. It is refused with
// CodeConflict while a worker serves the host or orders of it may still
// run.
func (c *Client) ForgetHost(ctx context.Context, name string) error {
	_, _, err := c.call(ctx, request{method: http.MethodDelete, path: "/v1/hosts/" + pathID(name)}, nil)
	return err
}

// StartMaintenance is POST /v1/hosts/{host}/maintenance (admin): new
// orders for the host are refused (CodeHostInMaintenance) until
// EndMaintenance; its queued and running orders are left alone. reason
// is shown in every refusal; for a host already in maintenance it
// replaces the one recorded ("" clears it), and the answer says who gave
// it. KeepMaintenance leaves the reason as it is.
func (c *Client) StartMaintenance(ctx context.Context, name, reason string) (*MaintenanceState, error) {
	return c.startMaintenance(ctx, name, map[string]string{"reason": reason})
}

// KeepMaintenance is StartMaintenance without a reason: a host already in
// maintenance stays as it is (its reason, who put it there and since
// when: nothing is logged), and one that was not is put in it with no
// reason.
func (c *Client) KeepMaintenance(ctx context.Context, name string) (*MaintenanceState, error) {
	return c.startMaintenance(ctx, name, map[string]string{})
}

func (c *Client) startMaintenance(ctx context.Context, name string, body map[string]string) (*MaintenanceState, error) {
	var st MaintenanceState
	_, _, err := c.call(ctx, request{method: http.MethodPost, path: "/v1/hosts/" + pathID(name) + "/maintenance",
		body: body}, &st)
	if err != nil {
		return nil, err
	}
	return &st, nil
}

// EndMaintenance is DELETE /v1/hosts/{host}/maintenance (admin): the
// host's new orders are accepted again.
func (c *Client) EndMaintenance(ctx context.Context, name string) (*MaintenanceState, error) {
	var st MaintenanceState
	_, _, err := c.call(ctx, request{method: http.MethodDelete, path: "/v1/hosts/" + pathID(name) + "/maintenance"}, &st)
	if err != nil {
		return nil, err
	}
	return &st, nil
}

// AbandonHost is ForgetHost for a host whose worker is gone for good with
// orders of it left queued or running (DELETE /v1/hosts/{host}?abandon=true,
// admin): the running ones are marked interrupted and the queued ones
// canceled, then the host is forgotten. Still refused while a worker
// serves the host.
func (c *Client) AbandonHost(ctx context.Context, name string) error {
	_, _, err := c.call(ctx, request{method: http.MethodDelete, path: "/v1/hosts/" + pathID(name) + "?abandon=true"}, nil)
	return err
}
