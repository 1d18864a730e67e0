package api

import (
	"net/url"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
)

// outputsOf reads the outputs parameter of a listing of orders into f:
// "full" (the default) writes each order as GET /v1/orders/{id} does,
// "none" leaves out the content of every output, which the store then
// does not read (postgres.Filter.NoOutputs). A table of orders (orderly
// ls) downloaded megabytes of output per page only to show none of it.
func outputsOf(q url.Values, f *postgres.Filter) error {
	switch v := q.Get("outputs"); v {
	case "", "full":
	case "none":
		f.NoOutputs = true
	default:
		return order.FieldError(order.CodeInvalid, "outputs", "outputs must be full or none, not %q", v)
	}
	return nil
}

// noOutputOrder is an Order as outputs=none writes it: the same fields,
// except that its result's streams have no content field. The result
// field, shallower than Order's, hides it in the JSON, where it comes
// last as Order's does.
type noOutputOrder struct {
	Order
	Result *noOutputResult `json:"result"`
}

// noOutputResult is a Result whose streams have no content.
type noOutputResult struct {
	Result
	Stdout noOutputStream `json:"stdout"`
	Stderr noOutputStream `json:"stderr"`
}

// noOutputStream is a Stream without its content. Encode is the encoding
// the order asked for: whether text would have been sent as base64
// (switched_to_base64) is known only by reading the content.
type noOutputStream struct {
	Encode    *string `json:"encode"`
	Bytes     int64   `json:"bytes"`
	Truncated bool    `json:"truncated"`
	SHA256    string  `json:"sha256"`
}

// noOutputResponse is the answer for o, read without its outputs'
// contents (postgres.Filter.NoOutputs), as outputs=none writes it.
func noOutputResponse(o *order.Order) noOutputOrder {
	resp := noOutputOrder{Order: toResponse(o)}
	if r := resp.Order.Result; r != nil {
		resp.Result = &noOutputResult{Result: *r, Stdout: noOutputStreamOf(r.Stdout), Stderr: noOutputStreamOf(r.Stderr)}
	}
	return resp
}

func noOutputStreamOf(s Stream) noOutputStream {
	return noOutputStream{Encode: s.Encode, Bytes: s.Bytes, Truncated: s.Truncated, SHA256: s.SHA256}
}

// noOutputOrderList is an OrderList as outputs=none writes it.
type noOutputOrderList struct {
	Orders     []noOutputOrder `json:"orders"`
	NextCursor *string         `json:"next_cursor"`
}

// noOutputBatch is a Batch as outputs=none writes it (GET
// /v1/batches/{id}, which refuses no host).
type noOutputBatch struct {
	BatchID uuid.UUID       `json:"batch_id"`
	Counts  map[string]int  `json:"counts"`
	Orders  []noOutputOrder `json:"orders"`
}

// noOutputResponses is noOutputResponse of each of list.
func noOutputResponses(list []*order.Order) []noOutputOrder {
	out := make([]noOutputOrder, len(list))
	for i, o := range list {
		out[i] = noOutputResponse(o)
	}
	return out
}
