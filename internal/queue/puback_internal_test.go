package queue

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// pubAckAnswers are answers a publish may get: nats-server's PubAck for a
// message stored (with a domain or not) and for a duplicate, as it writes
// them (server/stream.go: `{"stream":"S","seq":` the sequence, then `}` or
// `,"duplicate": true}`), errors, a batch's answer, and forms only a
// hostile or broken peer would send.
var pubAckAnswers = []string{
	`{"stream":"ORDERLY_ORDERS","seq":1}`,
	`{"stream":"ORDERLY_ORDERS","seq":18446744073709551615}`,
	`{"stream":"ORDERLY_ORDERS","seq":18446744073709551616}`,
	`{"stream":"ORDERLY_ORDERS","seq":42,"duplicate": true}`,
	`{"stream":"ORDERLY_ORDERS","seq":42,"duplicate":false}`,
	`{"stream":"ORDERLY_ORDERS","domain":"hub","seq":7}`,
	`{"stream":"ORDERLY_ORDERS","domain":"","seq":7}`,
	` { "stream" : "S" , "seq" : 3 } `, "{\"stream\":\"S\",\n\t\"seq\":3}\r\n",
	`{"seq":3,"stream":"S"}`,
	`{"stream":"S","seq":3,"batch":"b1","count":4}`,
	`{"stream":"S","seq":3,"val":"1"}`,
	`{"stream":"S","seq":3,"type":"io.nats.jetstream.api.v1.pub_ack"}`, `{"type":3,"stream":"S","seq":1}`,
	`{"error":{"code":503,"err_code":10077,"description":"resource limits exceeded for account"}}`,
	`{"error":{"code":400,"err_code":10060,"description":"expected stream does not match"},"stream":"S","seq":0}`,
	`{"stream":"S","seq":3,"error":null}`,
	`{"stream":"","seq":3}`, `{"seq":3}`, `{"stream":"S"}`, `{"stream":null,"seq":3}`,
	`{"stream":"S","seq":null}`, `{"stream":"S","seq":-1}`, `{"stream":"S","seq":1.5}`,
	`{"stream":"S","seq":1e3}`, `{"stream":"S","seq":01}`, `{"stream":"S","seq":0}`,
	`{"stream":"S","seq":"3"}`, `{"stream":"S","seq":3,"duplicate":"yes"}`,
	`{"Stream":"S","SEQ":3}`, `{"stream":"S","stream":"T","seq":3}`, `{"stream":"S","seq":3,"seq":4}`,
	`{"stream":"S","seq":3,"duplicate":true,"duplicate":false}`,
	`{"stream":"S\u0041","seq":3}`, `{"stream":"é","seq":3}`, `{"stream":"a\"b","seq":3}`,
	`{"stream":"S","seq":3}x`, `{"stream":"S","seq":3}}`, `{"stream":"S","seq":3,}`,
	`{"stream":"S" "seq":3}`, `{"stream":"S","seq":3`, `{"stream":"S","seq"}`,
	`{}`, `{ }`, `[]`, `null`, ``, ` `, `"S"`, `3`, `{"stream":"S","seq":3,"domain":{}}`,
}

// TestPubAckOfAsJetStream holds the orders' publish's read of its
// answer in place (pubAckOf) to jetstream's by encoding/json
// (decodedPubAck): the same sequence, the same error text, the same
// jetstream.ErrInvalidJSAck and *jetstream.APIError.
func TestPubAckOfAsJetStream(t *testing.T) {
	for _, a := range pubAckAnswers {
		samePubAck(t, []byte(a))
	}
}

func FuzzPubAckOf(f *testing.F) {
	for _, a := range pubAckAnswers {
		f.Add([]byte(a))
	}
	f.Fuzz(samePubAck)
}

func samePubAck(t *testing.T, b []byte) {
	seq, err := pubAckOf(b)
	wantSeq, wantErr := decodedPubAck(b)
	agreeOnPubAck(t, b, seq, err, wantSeq, wantErr)
}

// agreeOnPubAck fails t when the sequence and error read from answer b
// differ from jetstream's: the text, jetstream.ErrInvalidJSAck and the
// *jetstream.APIError.
func agreeOnPubAck(t *testing.T, b []byte, seq uint64, err error, wantSeq uint64, wantErr error) {
	t.Helper()
	if seq != wantSeq || fmt.Sprint(err) != fmt.Sprint(wantErr) ||
		errors.Is(err, jetstream.ErrInvalidJSAck) != errors.Is(wantErr, jetstream.ErrInvalidJSAck) {
		t.Errorf("%q: %d, %v; jetstream: %d, %v", b, seq, err, wantSeq, wantErr)
	}
	var apiErr, wantAPIErr *jetstream.APIError
	if errors.As(err, &apiErr) != errors.As(wantErr, &wantAPIErr) || (apiErr != nil && *apiErr != *wantAPIErr) {
		t.Errorf("%q: API error %v; jetstream: %v", b, apiErr, wantAPIErr)
	}
}

// TestPlainPubAckAllocatesNothing: nats-server's PubAck of a message
// stored is read in place (json.Unmarshal into jetstream's answer took 7
// allocations per publish).
func TestPlainPubAckAllocatesNothing(t *testing.T) {
	for _, a := range []string{`{"stream":"ORDERLY_ORDERS","seq":123456}`, `{"stream":"ORDERLY_ORDERS","seq":42,"duplicate": true}`} {
		b := []byte(a)
		if n := testing.AllocsPerRun(100, func() {
			if _, err := pubAckOf(b); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%s: %.0f allocations, want 0", a, n)
		}
	}
}
