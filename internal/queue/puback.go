package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/jsonenc"
)

// publishStored is jetstream's PublishMsg without options, as an order's
// publish called it: m is sent as a request, sent again after
// jetstream.DefaultPubRetryWait on no responders (a stream leader
// changing) up to jetstream.DefaultPubRetryAttempts more times, and the
// answer is the stream's PubAck. ctx must have a deadline (Publish's).
// What differs is the PubAck's read (pubAckOf): jetstream decoded it with
// encoding/json, seven allocations and a twentieth of the API's CPU
// in a submit (docs/benchmarks.md, the thirty-fifth round).
func (q *Queue) publishStored(ctx context.Context, m *nats.Msg) (uint64, error) {
	resp, err := q.nc.RequestMsgWithContext(ctx, m)
	for retry := 0; errors.Is(err, nats.ErrNoResponders) && retry < jetstream.DefaultPubRetryAttempts; retry++ {
		t := time.NewTimer(jetstream.DefaultPubRetryWait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		resp, err = q.nc.RequestMsgWithContext(ctx, m)
	}
	if errors.Is(err, nats.ErrNoResponders) {
		return 0, jetstream.ErrNoStreamResponse
	}
	if err != nil {
		return 0, err
	}
	return pubAckOf(resp.Data)
}

// pubAckOf reads a stream's answer to a publish as jetstream's
// PublishMsg does: the stored message's sequence, the stream's error as
// "nats: " and its *jetstream.APIError, or jetstream.ErrInvalidJSAck. The
// PubAck nats-server writes for a message stored or a duplicate (a flat
// object of a plain stream name, an optional domain, the sequence and
// perhaps "duplicate": true) is read in place; anything else (an error,
// a batch's answer, an escape) by encoding/json, as before, to the same
// result (TestPubAckOfAsJetStream).
func pubAckOf(b []byte) (uint64, error) {
	if seq, ok := plainPubAck(b); ok {
		return seq, nil
	}
	return decodedPubAck(b)
}

// decodedPubAck is jetstream's read of a publish's answer (nats.go
// v1.55.0, jetstream/publish.go's publishMsg into its pubAckResponse):
// encoding/json into the answer's type, error and *jetstream.PubAck. The
// type is read only as jetstream read it: one that is no string makes
// the answer invalid.
func decodedPubAck(b []byte) (uint64, error) {
	var resp struct {
		Type  string              `json:"type"`
		Error *jetstream.APIError `json:"error,omitempty"`
		*jetstream.PubAck
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		return 0, jetstream.ErrInvalidJSAck
	}
	if resp.Error != nil {
		return 0, fmt.Errorf("nats: %w", resp.Error)
	}
	if resp.PubAck == nil || resp.Stream == "" {
		return 0, jetstream.ErrInvalidJSAck
	}
	return resp.Sequence, nil
}

// plainPubAck reads b when it is a JSON object of "stream" (a non-empty
// string of printable ASCII without escapes), optionally "domain" (such
// a string), "seq" (decimal digits that fit a uint64) and optionally
// "duplicate" (true or false), each once, in any order; ok is false for
// any other b, which pubAckOf hands to encoding/json.
func plainPubAck(b []byte) (seq uint64, ok bool) {
	i := jsonenc.Space(b, 0)
	if i == len(b) || b[i] != '{' {
		return 0, false
	}
	var stream, gotSeq, domain, duplicate bool
	for i = jsonenc.Space(b, i+1); ; {
		k, next, plain := jsonenc.PlainString(b, i)
		if !plain {
			return 0, false
		}
		if i = jsonenc.Space(b, next); i == len(b) || b[i] != ':' {
			return 0, false
		}
		i = jsonenc.Space(b, i+1)
		switch string(k) {
		case "stream":
			v, next, plain := jsonenc.PlainString(b, i)
			if !plain || stream || len(v) == 0 {
				return 0, false
			}
			stream, i = true, next
		case "domain":
			_, next, plain := jsonenc.PlainString(b, i)
			if !plain || domain {
				return 0, false
			}
			domain, i = true, next
		case "seq":
			if gotSeq {
				return 0, false
			}
			if seq, i, plain = jsonenc.PlainUint(b, i); !plain {
				return 0, false
			}
			gotSeq = true
		case "duplicate":
			if duplicate {
				return 0, false
			}
			if i = jsonenc.PlainBool(b, i); i < 0 {
				return 0, false
			}
			duplicate = true
		default:
			return 0, false
		}
		if i = jsonenc.Space(b, i); i < len(b) && b[i] == ',' {
			i = jsonenc.Space(b, i+1)
			continue
		}
		if i == len(b) || b[i] != '}' || jsonenc.Space(b, i+1) != len(b) {
			return 0, false
		}
		return seq, stream && gotSeq
	}
}
