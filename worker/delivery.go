package worker

import (
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
)

// delivery is a message of the host's consumer with what the worker reads
// of it, read once, when the feeder takes it (newDelivery): the order id
// its body names, and the metadata its reply subject carries (the stream's
// sequence and when the stream stored it, the consumer's sequence, how
// many of the host's messages follow it). The feeder's gap check, the
// claim, the pipeline's wait for the next delivery and the ack's
// confirmation each parsed the reply subject again: 3.03 parses per
// delivery of a backlog, each an allocation (TestWorkerBacklogAllocations;
// docs/decisions.md, hB25).
//
// Read once, still checked where it is used, as each parse was: a body
// that is no order id is dropped by whoever would claim it (begin, the
// pipeline), and metadata that could not be read is none (nil), which
// each user handles as it handled a failed parse.
type delivery struct {
	jetstream.Msg
	id    uuid.UUID
	idErr error                  // the body is not an order id
	meta  *jetstream.MsgMetadata // nil when the reply subject carries none
}

// newDelivery reads msg's order id and metadata.
func newDelivery(msg jetstream.Msg) *delivery {
	d := &delivery{Msg: msg}
	id, err := uuid.ParseBytes(msg.Data())
	if err != nil {
		d.idErr = fmt.Errorf("message on %s is not an order id", msg.Subject())
	} else {
		d.id = id
	}
	if meta, err := msg.Metadata(); err == nil {
		d.meta = meta
	}
	return d
}

// stored is the message's stream sequence and when the stream stored it,
// zero when its metadata could not be read.
func (d *delivery) stored() (uint64, time.Time) {
	if d.meta == nil {
		return 0, time.Time{}
	}
	return d.meta.Sequence.Stream, d.meta.Timestamp
}

// acked is the message as an ack's confirmation raises the host's ack
// floor with it (ackedTo), zero when its metadata could not be read.
func (d *delivery) acked() queue.Acked {
	if d.meta == nil {
		return queue.Acked{}
	}
	return queue.Acked{Seq: d.meta.Sequence.Stream, Stored: d.meta.Timestamp, ID: d.id}
}

// following reports whether the stream said, delivering the message, that
// more of the host's messages followed it.
func (d *delivery) following() bool {
	return d.meta != nil && d.meta.NumPending > 0
}
