package queue

// Inbox prefixes of orderly's own connections. Replies (JetStream API
// answers, pulled orders, KV reads) arrive on a connection's inbox; when
// every role had the default _INBOX, any client allowed to receive its own
// replies could subscribe to _INBOX.> and read everyone else's, including
// the Authorization header of submissions the API pulls from the submit
// stream. So each role has its own prefix and its NATS permissions let it
// subscribe only there (internal/natsembed, deploy/nats). Submitters keep
// the default _INBOX.
const (
	// APIInbox is the inbox prefix of the API (and of serve, whose worker
	// shares the API's connection).
	APIInbox = "_INBOX_api"
	// SubmitterInbox is the default prefix external submitters use.
	SubmitterInbox = "_INBOX"
)

// ReplySubject is orderly's reply space: a NATS submitter may ask for its
// answer (Orderly-Reply) there instead of on an inbox.
const ReplySubject = "orderly.reply."

// WorkerInbox is the inbox prefix of the worker of host.
func WorkerInbox(host string) string { return "_INBOX_worker_" + host }
