package queue

import "github.com/nats-io/nats.go/jetstream"

// SameHostConsumer exposes sameHostConsumer to the tests.
func SameHostConsumer(q *Queue, host string, have jetstream.ConsumerConfig) bool {
	return sameHostConsumer(have, q.hostConsumerConfig(host))
}
