package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/logging"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
)

// Host is a worker host as GET /v1/hosts shows it.
type Host struct {
	Host         string     `json:"host"`
	Online       bool       `json:"online"`
	LastSeen     *time.Time `json:"last_seen"`
	Version      string     `json:"version"`
	Instance     string     `json:"instance"`
	CurrentOrder *uuid.UUID `json:"current_order"`
	QueueDepth   *int       `json:"queue_depth,omitempty"`
	Queued       []Order    `json:"queued,omitempty"`
	Running      *Order     `json:"running,omitempty"`
	Standby      *Standby   `json:"standby,omitempty"`
	// RestoreGuard is what the online worker says of its claim mark
	// (queue.HostInfo): "on", or "off: " and why; absent offline, or from
	// a worker before it.
	RestoreGuard string `json:"restore_guard,omitempty"`
	// PostgresUnreachable is set while the online worker cannot reach
	// PostgreSQL (queue.HostInfo): it holds the host, so no standby
	// takes it, and runs nothing; its orders wait.
	PostgresUnreachable *PostgresOutage `json:"postgres_unreachable,omitempty"`
	// Maintenance, when set, is who put the host in maintenance, when
	// and why: new orders for it are refused (maintenance.go).
	Maintenance *HostMaintenance `json:"maintenance,omitempty"`
	// Registry is "unavailable" when NATS did not answer the read of the
	// heartbeats within hostsRegistryTimeout: the host is as PostgreSQL
	// knows it (last_seen, version and instance of the last worker it
	// recorded, its current order, queue and maintenance), and whether it
	// is online and who stands by are unknown (online false, standby,
	// restore_guard and postgres_unreachable absent). Absent otherwise.
	Registry string `json:"registry,omitempty"`
}

// hostsRegistryTimeout bounds the read of the heartbeats and standby
// reports in a hosts listing: with NATS down or frozen it waited out
// each of its JetStream requests' 5 s one after another, and a fleet's
// view, looked at precisely when things are broken, came 10 s or more
// late or not before the client gave up. Past it the listing answers
// what PostgreSQL knows, marked (Host.Registry).
const hostsRegistryTimeout = 3 * time.Second

// registryUnavailable is Host.Registry when NATS did not answer.
const registryUnavailable = "unavailable"

// registryMisses thins the WARN of hosts listed without their
// heartbeats: the first of a run of such listings, then one a minute
// (logging.Streak), and an INFO with the count once a listing has them
// again. Every open hosts page lists them each 5 s, a dashboard at each
// view, so one WARN per listing was a line every few seconds for as
// long as NATS did not answer.
type registryMisses struct {
	inRun  atomic.Bool // a run is on: end checks it without the lock
	mu     sync.Mutex
	streak logging.Streak
}

// fail counts a listing without the heartbeats and says whether to log
// it, with the run's count so far.
func (m *registryMisses) fail() (n int, log bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.inRun.Store(true)
	return m.streak.Fail()
}

// end ends a run, returning how many listings it had (0: none).
func (m *registryMisses) end() int {
	if !m.inRun.Load() {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.inRun.Store(false)
	return m.streak.End()
}

// PostgresOutage is how long the worker of a host has failed to reach
// PostgreSQL and why. The error names the database's address and user:
// only an admin or an auditor reads it.
type PostgresOutage struct {
	Since    time.Time `json:"since"`
	Error    string    `json:"error,omitempty"`
	Failures int       `json:"failures"`
}

// Standby is a worker waiting for a host's lease, ready to take the host
// when its worker stops or dies.
type Standby struct {
	Instance     string    `json:"instance"`
	Version      string    `json:"version"`
	WaitingSince time.Time `json:"waiting_since"`
	LastSeen     time.Time `json:"last_seen"`
}

// hosts merges what PostgreSQL remembers (every host ever seen) with the
// live heartbeats in the KV bucket (who is online now, who stands by):
// of every host, or of the host name only (its view read the whole
// fleet's rows and heartbeats, to keep one). registry is what each
// host's Registry says: "" when the heartbeats were read.
func (s *Server) hosts(r *http.Request, name string) (_ []Host, registry string, err error) {
	var names []string
	workers := s.Queue.Workers
	if name != "" {
		names = []string{name}
		workers = func(ctx context.Context) (map[string]queue.HostInfo, map[string]queue.HostInfo, error) {
			return s.Queue.WorkersOf(ctx, name)
		}
	}
	rows, err := s.Store.Hosts(r.Context(), names...)
	if err != nil {
		return nil, "", err
	}
	// Read again at once when the connection drops under the read (a
	// request lost with it waited out the bound, and the listing said
	// nothing of the heartbeats for a restart of 0.3 s).
	ctx, cancel := context.WithTimeout(r.Context(), hostsRegistryTimeout)
	var online, standbys map[string]queue.HostInfo
	err = s.Queue.RetryOnDrop(ctx, func(ctx context.Context) (err error) {
		online, standbys, err = workers(ctx)
		return err
	})
	cancel()
	if err != nil {
		if r.Context().Err() != nil {
			return nil, "", r.Context().Err()
		}
		if n, log := s.registryMisses.fail(); log {
			s.logger.Warn("hosts listed without their heartbeats: NATS did not answer", "error", err, "timeout", hostsRegistryTimeout,
				"listings", n)
		}
		registry = registryUnavailable
	} else if n := s.registryMisses.end(); n > 0 {
		s.logger.Info("hosts listed with their heartbeats again", "listings_without", n)
	}
	current, err := s.Store.CurrentOrders(r.Context(), names...)
	if err != nil {
		return nil, "", err
	}
	byHost := map[string]*Host{}
	for _, h := range rows {
		ls := h.LastSeen
		v := &Host{Host: h.Host, LastSeen: &ls, Version: h.Version, Instance: h.Instance, Registry: registry}
		// Without the heartbeats, the order PostgreSQL has running by
		// the worker it last recorded for the host.
		if c, ok := current[h.Host]; ok && registry != "" && c.Worker == h.Instance {
			v.CurrentOrder = &c.ID
		}
		byHost[h.Host] = v
	}
	for name, info := range online {
		h := byHost[name]
		if h == nil {
			h = &Host{Host: name}
			byHost[name] = h
		}
		ls := info.LastSeen
		h.Online, h.LastSeen, h.Version, h.Instance = true, &ls, info.Version, info.Instance
		h.RestoreGuard = info.RestoreGuard
		if o := info.PostgresUnreachable; o != nil {
			h.PostgresUnreachable = &PostgresOutage{Since: o.Since.UTC(), Failures: o.Failures}
			if seesAll(principalOf(r)) {
				h.PostgresUnreachable.Error = o.Error
			}
		}
		// From PostgreSQL, not the heartbeat's (up to nats.heartbeat
		// old), and only an order of the worker serving the host: not
		// one a dead predecessor left, which its takeover is settling.
		if c, ok := current[name]; ok && c.Worker == info.Instance {
			h.CurrentOrder = &c.ID
		}
	}
	for name, sb := range standbys {
		h := byHost[name]
		if h == nil {
			h = &Host{Host: name}
			byHost[name] = h
		}
		h.Standby = &Standby{Instance: sb.Instance, Version: sb.Version, WaitingSince: sb.StartedAt.UTC(), LastSeen: sb.LastSeen}
	}
	if err := s.hideOthersOrders(r, byHost); err != nil {
		return nil, "", err
	}
	// From PostgreSQL, not this replica's cache: the listing shows what
	// an admin set a moment ago on another replica. A host in
	// maintenance is listed even if no worker ever served it.
	maint, err := s.Store.HostsInMaintenance(r.Context())
	if err != nil {
		return nil, "", err
	}
	for hname, m := range maint {
		if name != "" && hname != name {
			continue
		}
		h := byHost[hname]
		if h == nil {
			h = &Host{Host: hname}
			byHost[hname] = h
		}
		h.Maintenance = maintenanceView(m)
		h.Registry = registry
	}
	out := make([]Host, 0, len(byHost))
	for _, h := range byHost {
		out = append(out, *h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out, registry, nil
}

// hideOthersOrders clears a host's current order when the principal may
// not read it: the heartbeat names any principal's order, and read
// scoping (a principal reads its own orders unless admin or auditor)
// covers its id too.
func (s *Server) hideOthersOrders(r *http.Request, byHost map[string]*Host) error {
	if seesAll(principalOf(r)) {
		return nil
	}
	var ids []uuid.UUID
	for _, h := range byHost {
		if h.CurrentOrder != nil {
			ids = append(ids, *h.CurrentOrder)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	mine, _, err := s.Store.ListOrders(r.Context(), scoped(r, postgres.Filter{Status: []order.Status{order.StatusRunning}, Limit: 1000}))
	if err != nil {
		return err
	}
	own := make(map[uuid.UUID]bool, len(mine))
	for _, o := range mine {
		own[o.ID] = true
	}
	for _, h := range byHost {
		if h.CurrentOrder != nil && !own[*h.CurrentOrder] {
			h.CurrentOrder = nil
		}
	}
	return nil
}

// handleHosts is GET /v1/hosts, with each host's queue depth (one query
// over the active orders), so that a fleet's view needs no call per host.
func (s *Server) handleHosts(w http.ResponseWriter, r *http.Request) {
	hs, registry, err := s.hosts(r, "")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	depths, err := s.Store.QueueDepths(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	listed := make(map[string]bool, len(hs))
	for i := range hs {
		d := depths[hs[i].Host]
		hs[i].QueueDepth = &d
		listed[hs[i].Host] = true
	}
	// A host no worker ever served (a typo, a machine not yet set up)
	// whose orders wait: the fleet gauges count it offline, so the list
	// shows it too.
	for name, d := range depths {
		if !listed[name] && d > 0 {
			hs = append(hs, Host{Host: name, QueueDepth: &d, Registry: registry})
		}
	}
	sort.Slice(hs, func(i, j int) bool { return hs[i].Host < hs[j].Host })
	// The list says it once too, for a client that shows the fleet
	// before its hosts: every host's online is unknown.
	if registry != "" {
		encode(w, http.StatusOK, map[string]any{"hosts": hs, "registry": registry})
		return
	}
	encode(w, http.StatusOK, map[string]any{"hosts": hs})
}

// handleHost is GET /v1/hosts/{host}: the host with its running order and
// its queue in execution order.
func (s *Server) handleHost(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "host")
	if err := order.CheckHost(name); err != nil {
		s.writeError(w, r, err)
		return
	}
	hs, registry, err := s.hosts(r, name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var h *Host
	for i := range hs {
		if hs[i].Host == name {
			h = &hs[i]
		}
	}
	known := h != nil
	if !known {
		h = &Host{Host: name, Registry: registry}
	}
	running, _, err := s.Store.ListOrders(r.Context(), scoped(r, postgres.Filter{Host: name, Status: []order.Status{order.StatusRunning}, Limit: 10}))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if len(running) > 0 {
		rr := toResponse(running[0])
		h.Running = &rr
	}
	queued, _, err := s.Store.ListOrders(r.Context(), scoped(r, postgres.Filter{Host: name, Status: []order.Status{order.StatusQueued}, Limit: 1000, OldestFirst: true}))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	h.Queued = make([]Order, 0, len(queued))
	for _, o := range queued {
		h.Queued = append(h.Queued, toResponse(o))
	}
	// The depth counts everyone's orders; the list shows only those the
	// requester may read.
	depth, err := s.Store.QueueDepth(r.Context(), name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	h.QueueDepth = &depth
	if !known && depth == 0 && h.Running == nil && h.Maintenance == nil {
		s.writeError(w, r, notFound("unknown host "+strconv.Quote(name)+": no worker has served it and it has no queued or running order"))
		return
	}
	s.encodeTagged(w, r, h)
}

// handleForgetHost is DELETE /v1/hosts/{host}: an admin retires a host
// that is gone for good (a machine decommissioned, a name mistyped), so
// that it no longer shows in the hosts list and the fleet metrics, where
// it counted as offline for ever. Refused while a worker serves it,
// holds its lease or stands by for it, or any of its orders may still
// run; its orders' history stays. A worker that starts for it later
// makes it known again.
func (s *Server) handleForgetHost(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	if !p.HasRole("admin") {
		s.writeError(w, r, order.Errorf(order.CodeForbidden, "forgetting a host needs the admin role"))
		return
	}
	name := chi.URLParam(r, "host")
	if err := order.CheckHost(name); err != nil {
		s.writeError(w, r, err)
		return
	}
	q, err := queryOf(r, []string{"abandon"})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	abandonedBy := ""
	switch v := q.Get("abandon"); v {
	case "", "false":
	case "true":
		abandonedBy = p.Name
	default:
		s.writeError(w, r, order.FieldError(order.CodeInvalid, "abandon", "abandon must be true or false, not %q", v))
		return
	}
	// One bound for what the request waits for NATS (the checks, then
	// the removal), not counting PostgreSQL's part between them.
	start := time.Now()
	nctx, cancel := context.WithTimeout(r.Context(), hostForgetTimeout)
	err = s.hostUnserved(nctx, name)
	cancel()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	checked := time.Since(start)
	found, active, abandoned, err := s.Store.ForgetHost(r.Context(), name, abandonedBy)
	var inMaintenance *postgres.HostInMaintenanceError
	switch {
	case errors.As(err, &inMaintenance):
		s.writeError(w, r, forgetInMaintenance(name, inMaintenance.Maintenance))
		return
	case errors.Is(err, postgres.ErrHostBusy):
		orders, them := "orders", "them"
		if active == 1 {
			orders, them = "order", "it"
		}
		s.writeError(w, r, &order.Error{Code: order.CodeConflict,
			Message: fmt.Sprintf("host %s has %d %s queued or running: cancel %s first (a running order settles when a worker for the host starts), or abandon %s with the host (abandon=true)", name, active, orders, them, them),
			Details: map[string]any{"active_orders": active}})
		return
	case err != nil:
		s.writeError(w, r, err)
		return
	}
	// Each settled order ends as one the API cancels does: a line, a
	// count, and its finished event for the clients waiting on it.
	for _, a := range abandoned {
		if a.Status == order.StatusInterrupted {
			s.Logger.Warn("order interrupted", "order_id", a.ID, "host", name, "principal", a.Principal, "actor", p.Name, "reason", "host forgotten")
		} else {
			s.Logger.Info("order canceled", "order_id", a.ID, "host", name, "principal", a.Principal, "actor", p.Name)
		}
		s.Metrics.Finished(name, a.Status, -1)
		_ = s.Queue.PublishEvent(queue.Event{OrderID: a.ID, Type: "finished", Status: string(a.Status), Host: name})
	}
	// Also for a host PostgreSQL no longer knows: a request whose NATS
	// part failed is sent again.
	nctx, cancel = context.WithTimeout(r.Context(), hostForgetTimeout-checked)
	err = s.Queue.RetryOnDrop(nctx, func(ctx context.Context) error { return s.Queue.Forget(ctx, name) })
	cancel()
	if err != nil {
		if r.Context().Err() != nil {
			s.writeError(w, r, r.Context().Err())
			return
		}
		s.writeError(w, r, &order.Error{Code: order.CodeUnavailable, Err: err,
			Message: "the host's state in NATS could not be removed (NATS did not answer within " + hostForgetTimeout.String() + "): send the request again",
			Details: map[string]any{"timeout_seconds": hostForgetTimeout.Seconds()}})
		return
	}
	if !found && active == 0 {
		s.writeError(w, r, notFound("unknown host "+strconv.Quote(name)+": no worker has served it and it has no queued or running order"))
		return
	}
	s.Logger.Info("host forgotten", "host", name, "principal", p.Name, "abandoned_orders", active)
	w.WriteHeader(http.StatusNoContent)
}

// forgetInMaintenance refuses to forget a host in maintenance (409
// conflict, naming who put it there): forgetting it used to answer 204
// and leave it listed, its orders refused, until someone took it out of
// maintenance. Which of the two the admin meant (keep refusing its
// orders, or not) is the admin's to say: taken out of maintenance first,
// a host no worker serves and with no orders leaves the list with it,
// and one with its row is then forgotten. The store checks it in the
// forget's transaction (postgres.HostInMaintenanceError), so that a
// concurrent switch cannot come between the check and the delete.
func forgetInMaintenance(name string, m postgres.Maintenance) error {
	return &order.Error{Code: order.CodeConflict,
		Message: fmt.Sprintf("host %s is in maintenance (by %s since %s): take it out of maintenance first (DELETE /v1/hosts/%s/maintenance, orderly hosts %s --maintenance off), then forget it",
			name, m.By, m.Since.UTC().Format(time.RFC3339), name, name),
		Details: map[string]any{"maintenance": maintenanceView(m)}}
}

// hostUnserved refuses to forget host while a worker of it runs: one
// that serves it (its heartbeat is live), one that holds its lease
// without a heartbeat yet (taking the host over), or a standby waiting
// for it. A standby is a worker process still configured for the host:
// forgotten between its holder's death and its own takeover, the host
// came back as soon as the standby took it, with the consumer and keys
// just removed set up again. Whoever retires the host stops its workers
// first, the standby included.
// ctx bounds its NATS requests (hostForgetTimeout): past it, or on any
// failure to read, it is a 503 and nothing is forgotten.
func (s *Server) hostUnserved(ctx context.Context, name string) error {
	var online, standbys map[string]queue.HostInfo
	err := s.Queue.RetryOnDrop(ctx, func(ctx context.Context) (err error) {
		online, standbys, err = s.Queue.WorkersOf(ctx, name)
		return err
	})
	if err != nil {
		return registryUnanswered(err)
	}
	if h, ok := online[name]; ok {
		return &order.Error{Code: order.CodeConflict, Message: "host " + name + " has a live worker (" + h.Instance + "): stop it first " +
			"(a worker that died, rather than stopped, counts as live until its last heartbeat expires, nats.lease_ttl after it)",
			Details: map[string]any{"online": true, "instance": h.Instance}}
	}
	if sb, ok := standbys[name]; ok {
		return &order.Error{Code: order.CodeConflict, Message: "host " + name + " has a standby worker (" + sb.Instance + ") waiting to take it over: stop it first",
			Details: map[string]any{"online": false, "standby": sb.Instance}}
	}
	var holder string
	err = s.Queue.RetryOnDrop(ctx, func(ctx context.Context) (err error) {
		holder, err = s.Queue.LeaseHolder(ctx, name)
		return err
	})
	if err != nil {
		return registryUnanswered(err)
	}
	if holder != "" {
		return &order.Error{Code: order.CodeConflict, Message: "host " + name + " is being taken over by worker " + holder + ": stop it first " +
			"(a worker that died holds the host's lease until it expires, nats.lease_ttl after its last renewal)",
			Details: map[string]any{"online": false, "lease_holder": holder}}
	}
	return nil
}

// workerHeader is on a waited submission's 202 whose order is still
// queued on a host no worker serves: "none online; last seen <time>"
// (RFC 3339, UTC) or "none online; never seen". The wait ended in a
// bare 202 that said nothing of why, where the CLI and the web UI say
// "no worker online" (docs/client.md).
const workerHeader = "Orderly-Worker"

// workerNoteTimeout bounds noWorkerNote's reads together. The Go client
// asks for a wait a second short of its context's deadline, for the
// answer (client.SubmitOptions): bounded by hostsRegistryTimeout (3 s),
// a NATS that did not answer took the 202, and with it the order's id,
// past that deadline
// (TestWaitOnAHostNoWorkerServesAnswersWithinItsWaitWithNATSFrozen).
// The note is a hint; the answer is the order.
const workerNoteTimeout = 300 * time.Millisecond

// noWorkerNote is workerHeader's value for host when no worker serves it
// (no live heartbeat: Host.Online), "" when one does or the registry
// did not answer within workerNoteTimeout: the answer says nothing it
// does not know.
func (s *Server) noWorkerNote(ctx context.Context, host string) string {
	ctx, cancel := context.WithTimeout(ctx, workerNoteTimeout)
	defer cancel()
	var online map[string]queue.HostInfo
	err := s.Queue.RetryOnDrop(ctx, func(ctx context.Context) (err error) {
		online, _, err = s.Queue.WorkersOf(ctx, host)
		return err
	})
	if _, ok := online[host]; err != nil || ok {
		return ""
	}
	rows, err := s.Store.Hosts(ctx, host)
	if err != nil {
		return ""
	}
	for _, h := range rows {
		if h.Host == host {
			return "none online; last seen " + h.LastSeen.UTC().Format(time.RFC3339)
		}
	}
	return "none online; never seen"
}

// hostForgetTimeout bounds what DELETE /v1/hosts/{host} waits for NATS,
// its checks and its removal together: each of its JetStream requests
// waited out its own 5 s, one after another, so with NATS down or frozen
// an admin's request took 5 s or more (up to half a minute) to be refused,
// or outlasted the client. As the listing's read (hostsRegistryTimeout).
const hostForgetTimeout = hostsRegistryTimeout

// registryUnanswered is the 503 of a forget whose checks could not read
// the host registry (err): nothing was forgotten.
func registryUnanswered(err error) error {
	return &order.Error{Code: order.CodeUnavailable, Err: err,
		Message: "host registry unavailable (NATS did not answer within " + hostForgetTimeout.String() + "): nothing was forgotten; send the request again",
		Details: map[string]any{"timeout_seconds": hostForgetTimeout.Seconds()}}
}
