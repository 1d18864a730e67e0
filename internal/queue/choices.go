package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// Unit choices: the API asks the worker of a host which systemd units
// match an action param's glob (GET /v1/actions/{name}/choices). Only
// that worker can see its host's systemd. The request names only the
// glob; the worker answers only for globs of its own config's actions,
// so the bus cannot make it list anything else. Replies go to a subject
// with the host in it, so a worker can answer only for its own host.
const (
	ChoicesSubject      = "orderly.choices."     // + host
	ChoicesReplySubject = "orderly.choicereply." // + host + "." + unique id
)

// Unit is a systemd unit and its state.
type Unit struct {
	Name        string `json:"unit"`
	LoadState   string `json:"load_state"`
	ActiveState string `json:"active_state"`
	SubState    string `json:"sub_state"`
}

type choicesRequest struct {
	Glob string `json:"glob"`
}

type choicesReply struct {
	Units []Unit `json:"units"`
	Error string `json:"error,omitempty"`
}

// ErrNoChoices is returned when no worker of the host answered.
var ErrNoChoices = errors.New("no worker of the host answered")

// RequestChoices asks the worker of host for the units matching glob and
// waits for its answer until ctx ends (5 s when it has no deadline). An
// answer that is a refusal is returned as its error text.
//
// A request the connection drops under is sent again at once, on the
// new connection, with the same reply subject (nats.go subscribes it
// again): lost with the old one, or its answer lost, it waited out ctx
// (the action page's 5 s) and the unit list answered 503. A worker that
// got both copies answers both; the first answer read is the one.
func (q *Queue) RequestChoices(ctx context.Context, host, glob string) ([]Unit, error) {
	reply := ChoicesReplySubject + host + "." + nats.NewInbox()[len(nats.InboxPrefix):]
	sub, err := q.nc.SubscribeSync(reply)
	if err != nil {
		return nil, fmt.Errorf("subscribe to choices reply: %w", err)
	}
	defer sub.Unsubscribe()
	body, _ := json.Marshal(choicesRequest{Glob: glob})
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(publishAckWait)
	}
	var m *nats.Msg
	for try := 1; ; try++ {
		// The epoch before the request: a drop between the two is one
		// the request may have been lost to.
		tctx, ep, cancel := q.drops.bound(ctx, deadline)
		if err := q.nc.PublishMsg(&nats.Msg{Subject: ChoicesSubject + host, Reply: reply, Data: body}); err != nil {
			cancel()
			return nil, fmt.Errorf("request choices of %s: %w", host, err)
		}
		m, err = sub.NextMsgWithContext(tctx)
		cancel()
		if !ep.again(ctx, err, try, deadline) {
			break
		}
	}
	if err != nil {
		// No subscriber on the host's subject: the server answers the
		// reply subject with a no-responders status at once.
		if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrNoResponders) {
			return nil, ErrNoChoices
		}
		return nil, fmt.Errorf("wait for choices of %s: %w", host, err)
	}
	var r choicesReply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return nil, fmt.Errorf("decode choices of %s: %w", host, err)
	}
	if r.Error != "" {
		return nil, errors.New(r.Error)
	}
	return r.Units, nil
}

// ServeChoices answers the choices requests of host with list until ctx
// ends. The subscription's callback runs on the connection's own
// goroutine, one request at a time. A request whose reply subject is not
// this host's reply space is dropped.
func (q *Queue) ServeChoices(ctx context.Context, host string, list func(ctx context.Context, glob string) ([]Unit, error)) error {
	prefix := ChoicesReplySubject + host + "."
	sub, err := q.nc.Subscribe(ChoicesSubject+host, func(m *nats.Msg) {
		if len(m.Reply) <= len(prefix) || m.Reply[:len(prefix)] != prefix {
			return
		}
		var req choicesRequest
		var r choicesReply
		if err := json.Unmarshal(m.Data, &req); err != nil {
			r.Error = "malformed choices request"
		} else if units, err := list(ctx, req.Glob); err != nil {
			r.Error = err.Error()
		} else {
			r.Units = units
		}
		body, _ := json.Marshal(r)
		_ = q.nc.Publish(m.Reply, body)
	})
	if err != nil {
		return fmt.Errorf("subscribe to choices requests of %s: %w", host, err)
	}
	context.AfterFunc(ctx, func() { _ = sub.Unsubscribe() })
	return nil
}
