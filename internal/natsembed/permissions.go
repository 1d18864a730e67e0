package natsembed

import (
	"slices"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/internal/queue"
)

// The bus is an attack surface (DESIGN §4.7): every connection
// authenticates and gets only the subjects its role needs. The same model
// is spelled out for a real cluster in deploy/nats/auth.conf, and a test
// checks that the two agree.
//
// Three roles:
//   - API: defines the streams and the KV buckets, publishes orders,
//     events, cancel wake-ups and answers to NATS submitters, takes the
//     submit stream. It may not publish live output: only a worker
//     produces that.
//   - Worker of host X: consumes only its own durable consumer host_X,
//     reads and writes only its own lease and heartbeat keys (and writes
//     its standby report), publishes
//     only its own events and output, receives only its own control
//     subject. It cannot create or change streams.
//   - Submitter: publishes only to orderly.submit.> and receives the
//     answers on its inbox.
//
// serve's own connection carries its API and the worker of its host, so it
// gets both (ServePermissions).

// APIPermissions are the API's.
func APIPermissions() *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			"$JS.API.>", // streams, consumers, KV buckets, live replay
			"$JS.ACK." + queue.SubmitStream + ".>",
			"$JS.FC.>", // flow control of its KV watches
			"$KV.>",    // rate limit counters; host registry upkeep
			queue.OrdersSubject + ">",
			queue.EventsSubject + ">", // canceled and expired orders
			queue.ControlSubject + ">",
			queue.SubmitterInbox + ".>", // Orderly-Reply answers
			queue.ReplySubject + ">",    // and in orderly's reply space
			queue.ChoicesSubject + ">",  // unit choices of an action (queue/choices.go)
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			queue.APIInbox + ".>",
			queue.EventsSubject + ">",       // ?wait on an order
			queue.ChoicesReplySubject + ">", // the workers' unit choices
		}},
	}
}

// WorkerPermissions are those of the worker of host. host must be a valid
// host id (one subject token, order.ValidHost), or a wildcard in it would
// widen every subject below.
func WorkerPermissions(host string) *server.Permissions {
	consumer := queue.ConsumerName(host)
	orders := queue.OrdersStream + "." + consumer
	kvStream := "KV_" + queue.HostsBucket
	lease := "$KV." + queue.HostsBucket + ".lease." + host
	info := "$KV." + queue.HostsBucket + ".info." + host
	standby := "$KV." + queue.HostsBucket + ".standby." + host
	marks := "KV_" + queue.MarksBucket
	claimed := "$KV." + queue.MarksBucket + ".claimed." + host
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			// Its own durable consumer, and nothing of anyone else's: the
			// filter subject is part of the create subject, and the server
			// refuses a config whose filter differs from it.
			"$JS.API.CONSUMER.CREATE." + orders + "." + queue.OrdersSubject + host,
			"$JS.API.CONSUMER.INFO." + orders,
			"$JS.API.CONSUMER.DELETE." + orders,
			"$JS.API.CONSUMER.RESET." + orders,
			"$JS.API.CONSUMER.MSG.NEXT." + orders,
			"$JS.ACK." + orders + ".>",
			// Its lease and heartbeat: bind the bucket, read with a direct
			// get that names the key in the subject (the other forms carry
			// the key in the body, so they are not allowed), write, and
			// watch its own lease through a consumer filtered on it (its
			// flow control is that of the KV watch of workers before
			// queue.watchKey).
			"$JS.API.STREAM.INFO." + kvStream,
			"$JS.API.DIRECT.GET." + kvStream + "." + lease,
			"$JS.API.DIRECT.GET." + kvStream + "." + info,
			lease,
			info,
			// Its report as a standby while it waits for the lease
			// (written and deleted, never read back).
			standby,
			"$JS.API.CONSUMER.CREATE." + kvStream + ".*." + lease,
			"$JS.API.CONSUMER.DELETE." + kvStream + ".*",
			"$JS.FC." + kvStream + ".>",
			// Its claim mark (queue.ClaimMark): bind the bucket, read and
			// write its own key; the publish generation beside it is the
			// API's alone.
			"$JS.API.STREAM.INFO." + marks,
			"$JS.API.DIRECT.GET." + marks + "." + claimed,
			claimed,
			// Its own status events and live output, and reading back its
			// host's live output (what a worker taking over keeps of an
			// interrupted order) through an ordered consumer filtered on
			// one order of its host. Consumer names there are random, so
			// info, pull and delete cannot be scoped by name.
			queue.EventsSubject + host + ".>",
			queue.OutputSubject + host + ".>",
			"$JS.API.CONSUMER.CREATE." + queue.LiveStream + ".*." + queue.OutputSubject + host + ".*",
			"$JS.API.CONSUMER.INFO." + queue.LiveStream + ".*",
			"$JS.API.CONSUMER.MSG.NEXT." + queue.LiveStream + ".*",
			"$JS.API.CONSUMER.DELETE." + queue.LiveStream + ".*",
			// Answers to unit choices requests, in its own host's space.
			queue.ChoicesReplySubject + host + ".>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			queue.WorkerInbox(host) + ".>",
			queue.ControlSubject + host,
			queue.ChoicesSubject + host,
		}},
	}
}

// SubmitterPermissions are a NATS submitter's.
func SubmitterPermissions() *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{queue.SubmitSubject + ">"}},
		Subscribe: &server.SubjectPermission{Allow: []string{queue.SubmitterInbox + ".>", queue.ReplySubject + ">"}},
	}
}

// ServePermissions are serve's own connection's: its API and the worker of
// its host share it.
func ServePermissions(host string) *server.Permissions {
	return merge(APIPermissions(), WorkerPermissions(host))
}

func merge(a, b *server.Permissions) *server.Permissions {
	union := func(x, y []string) []string {
		out := slices.Clone(x)
		for _, s := range y {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
		return out
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: union(a.Publish.Allow, b.Publish.Allow)},
		Subscribe: &server.SubjectPermission{Allow: union(a.Subscribe.Allow, b.Subscribe.Allow)},
	}
}
