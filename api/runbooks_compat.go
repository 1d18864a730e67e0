package api

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/runbook"
)

// What a compat surface (api/compat's stage0) reads of runbooks; each is
// the native routes' own code path.

// RunbookList returns the runbooks of runbooks.dir, sorted by file name.
func (s *Server) RunbookList() ([]*runbook.Runbook, error) {
	src, _, err := s.runbookSource()
	if err != nil {
		return nil, err
	}
	return src.List()
}

// LoadRunbook returns the runbook file name, the check of a run of it
// with an environment (every problem execute would refuse it for, its
// input files' and their size included), and the runbook settings.
func (s *Server) LoadRunbook(name string) (*runbook.Runbook, func(env map[string]string) []runbook.Problem, config.Runbooks, error) {
	rb, src, cfg, err := s.loadRunbook(name)
	if err != nil {
		return nil, nil, cfg, err
	}
	return rb, func(env map[string]string) []runbook.Problem { return src.Check(rb, env, cfg.MaxInputBytes) }, cfg, nil
}

// RunbookRuns calls fn with the last limit runs of a runbook that p may
// read, oldest first, each with its outputs: its own, or every
// principal's for one that sees every order (admin, auditor), as GET
// /v1/runbooks/{name}/history. A stage0 client saw every run in the file;
// the outputs of other principals' runs are theirs here. The runs are
// listed lean and a run's large outputs are read when its turn comes, so
// no more than one run's outputs are in memory at a time.
func (s *Server) RunbookRuns(ctx context.Context, p auth.Principal, file string, limit int, fn func(*order.Order) error) error {
	f := postgres.Filter{Runbook: file, Limit: limit, Lean: true}
	if !seesAll(p) {
		f.Principal = p.Name
	}
	list, _, err := s.Store.ListOrders(ctx, f)
	if err != nil {
		return err
	}
	for i := len(list) - 1; i >= 0; i-- {
		o := list[i]
		list[i] = nil
		if postgres.OutputsLeft(o) {
			if o, err = s.Store.GetOrder(ctx, o.ID); err != nil {
				return err
			}
		}
		if err := fn(o); err != nil {
			return err
		}
	}
	return nil
}

// DelegatedPrincipal returns who a delegated runbook token acts for and
// the chain it is bound to; an unknown, ended or expired token is
// postgres.ErrNoDelegation.
func (s *Server) DelegatedPrincipal(ctx context.Context, token string) (auth.Principal, RunbookChain, error) {
	if s.Runbooks == nil {
		return auth.Principal{}, RunbookChain{}, postgres.ErrNoDelegation
	}
	d, err := s.Runbooks.Store.LookupDelegation(ctx, token)
	if err != nil {
		return auth.Principal{}, RunbookChain{}, err
	}
	return auth.Principal{Name: d.Principal, Roles: d.Roles, Kind: d.Kind, Claims: d.Claims},
		RunbookChain{Correlation: d.CorrelationID, Stack: d.Stack, Hosts: d.Hosts, Delegated: true, Parent: d.OrderID}, nil
}

// IsDelegationToken reports whether a bearer token is a delegated runbook
// token (to be looked up, not authenticated as a credential).
func IsDelegationToken(token string) bool {
	return len(token) > len(delegationPrefix) && token[:len(delegationPrefix)] == delegationPrefix
}

// FollowOrder calls fn with every chunk of o's output as the worker
// publishes it, until the order is terminal, and returns the order as
// PostgreSQL then holds it. fn is called from one goroutine. Output
// arrives through the live stream; PostgreSQL is read as a fallback, so a
// lost event only delays the end. The API drops an order's chunks from
// the live stream once its result is stored (queue.FreeLive), so a
// follower that lagged behind gets only a prefix of them: the rest comes
// from the stored output (of a truncated copy, what its head holds). Like a wait, it checks
// its request's credential (WithCredentialCheck) every poll: one that
// stopped being accepted ends it with an error CredentialGone reads.
func (s *Server) FollowOrder(ctx context.Context, o *order.Order, fn func(stream string, p []byte)) (*order.Order, error) {
	var seen [2]int64 // bytes of stdout and stderr given to fn
	live := fn
	fn = func(stream string, p []byte) {
		seen[streamIndex(stream)] += int64(len(p))
		live(stream, p)
	}
	// chunk gives fn the part of a live chunk that continues what fn was
	// given. Its offset (where in its stream it starts) tells a repeat,
	// dropped, from a chunk past a hole (chunks lost, as when NATS
	// restarted and its memory stream with them), not given either, so
	// what fn was given stays a prefix of the output. Placing goes on
	// past a hole: the worker publishes a running order's chunks again
	// from the first it keeps once the live stream is back
	// (queue.LiveOutput), and a later chunk that continues what fn was
	// given fills it; what none fills the stored copy gives at the end
	// (storedRest). A chunk without an offset (an older worker's) is
	// given as it comes, and so is one whose offset is negative, which
	// no worker writes, as the SSE stream and the partial output read
	// it: placed, it lost its first bytes.
	//
	// A chunk of a run seen before the newest (queue.LiveRuns: a thawed
	// worker's of a lost first run, come among the next run's) is not
	// given: placed by its offset, it stood among the next run's bytes.
	var runs queue.LiveRuns
	chunk := func(m *nats.Msg) {
		if runs.Earlier(m.Header.Get(nats.MsgIdHdr)) {
			return
		}
		stream := m.Header.Get(queue.StreamHeader)
		i, p := streamIndex(stream), m.Data
		if off, err := strconv.ParseInt(m.Header.Get(queue.OffsetHeader), 10, 64); err == nil && off >= 0 {
			if p, _ = order.Continuing(off, seen[i], p); p == nil {
				return
			}
		}
		fn(stream, p)
	}
	// A live stream that cannot be read as the follow starts (no leader
	// on a cluster while a node is killed or frozen, the API's server
	// gone, its consumers at nats-server's cap) leaves the follow to the
	// poll, which tells the end, and the stored output, given then
	// (storedRest); the feed is asked again at each poll. The run goes
	// on either way: ended with an error here, stage0's execute answered
	// 200 and cut its stream before any event, for a run that succeeded
	// (decisions.md, hE21).
	var cons *queue.LiveFeed
	var msgs <-chan *nats.Msg
	follow := func() error {
		c, err := s.Queue.Live(ctx, o.Host, o.ID, 0)
		if err != nil {
			return err
		}
		cons, msgs = c, c.Messages(ctx)
		return nil
	}
	if err := follow(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s.logger.Warn("follow an order's live output: not readable now; its output comes from PostgreSQL at its end unless the live stream answers at a later poll",
			"order_id", o.ID, "error", err)
	}
	defer func() {
		if cons != nil {
			cons.Stop()
		}
	}()
	outputSubject, eventSubject := queue.OutputSubjectOf(o.Host, o.ID), queue.EventSubjectOf(o.Host, o.ID)
	poll := time.NewTicker(2 * time.Second)
	defer poll.Stop()
	final := func() (*order.Order, error) {
		cur, err := s.Store.GetOrder(context.WithoutCancel(ctx), o.ID)
		if err == nil {
			storedRest(cur, seen, fn)
		}
		return cur, err
	}
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case m, ok := <-msgs:
			if !ok {
				// The live feed ended for good (its connection closed)
				// with the run maybe going on: the poll tells its end.
				msgs = nil
				continue
			}
			stream := m.Header.Get(queue.StreamHeader)
			switch {
			case m.Subject == outputSubject && stream != "":
				chunk(m)
			case m.Subject == eventSubject && stream == "":
				var ev queue.Event
				if json.Unmarshal(m.Data, &ev) == nil && ev.OrderID == o.ID && order.Status(ev.Status).Terminal() {
					// A read that fails (PostgreSQL restarting) leaves
					// the end to the poll: the run ended, and a stream
					// cut here had its client send it again.
					if cur, err := final(); err == nil {
						return cur, nil
					}
				}
			}
		case <-poll.C:
			// As a wait, the follow checks its request's credential
			// (a compat surface's own check) at each poll.
			if s.credentialGone(ctx) {
				return nil, errCredentialGone("order_id", o.ID)
			}
			cur, err := s.Store.GetOrder(ctx, o.ID)
			if errors.Is(err, context.Canceled) {
				return nil, err
			}
			if err == nil && cur.Status.Terminal() {
				// Output published before the end is already in msgs:
				// take it before answering.
				for {
					select {
					case m, ok := <-msgs:
						if ok && m.Subject == outputSubject && m.Header.Get(queue.StreamHeader) != "" {
							chunk(m)
							continue
						}
					default:
					}
					break
				}
				storedRest(cur, seen, fn)
				return cur, nil
			}
			if cons == nil {
				_ = follow() // still not readable: the next poll asks again
			}
		}
	}
}

// OutputCap is the per-stream output cap the worker that ran o applied,
// when it recorded one (it cut a stream); ok is false otherwise, or when
// it cannot be read.
func (s *Server) OutputCap(ctx context.Context, o *order.Order) (limit int64, ok bool) {
	limit, ok, err := s.Store.OutputCapOf(context.WithoutCancel(ctx), o.ID)
	return limit, ok && err == nil
}

// storedRest gives fn the part of o's stored output past the seen bytes
// the live stream delivered (a prefix of the output: FollowOrder gives no
// live chunk past a hole that no later chunk filled). Of a truncated
// stored copy it gives what its head holds past them: stage0, whose
// stream this is, sent the lines up to its cap and dropped the rest, so
// its client gets the output's beginning, never a piece of its end after
// an unmarked hole. The bytes between the head and the cap that the live
// stream lost are nowhere.
func storedRest(o *order.Order, seen [2]int64, fn func(stream string, p []byte)) {
	if o.Result == nil {
		return
	}
	for i, out := range []order.Output{o.Result.Stdout, o.Result.Stderr} {
		// None of a truncated copy's stream came live (the run ended,
		// and its chunks left the live stream, before the follower
		// began), or the live stream lost chunks before the head's end
		// (a NATS restart): the head is what the live stream began with.
		if rest := out.Head(); int64(len(rest)) > seen[i] {
			fn([2]string{"stdout", "stderr"}[i], rest[seen[i]:])
		}
	}
}

func streamIndex(stream string) int {
	if stream == "stderr" {
		return 1
	}
	return 0
}
