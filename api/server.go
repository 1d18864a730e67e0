// Package api is orderly's HTTP interface: routes, handlers, middleware and
// the one mapping from domain errors to HTTP statuses.
package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/metrics"
	"github.com/orderly-run/orderly/internal/netacl"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/recent"
)

// Store is what the API reads from PostgreSQL.
type Store interface {
	GetOrder(ctx context.Context, id uuid.UUID) (*order.Order, error)
	// RecordedByKey is the order a principal recorded under an
	// idempotency key, nil when none (answerRecordedRun).
	RecordedByKey(ctx context.Context, principal, key string) (*order.Order, error)
	// GetOrderLean and ReadOutputAt let an answer stream large kept
	// outputs from the database (encodeOrder).
	GetOrderLean(ctx context.Context, id uuid.UUID) (*order.Order, error)
	ReadOutputAt(ctx context.Context, id uuid.UUID, out postgres.Output, p []byte, off int64) (int, error)
	// GetOrderLeanWithCancel is GetOrderLean with the order's cancel
	// request, in one statement (GET /v1/orders/{id}).
	GetOrderLeanWithCancel(ctx context.Context, id uuid.UUID) (*order.Order, *postgres.CancelRequest, error)
	// GetOrderWithoutOutputs reads no output at all, for an answer that
	// shows none.
	GetOrderWithoutOutputs(ctx context.Context, id uuid.UUID) (*order.Order, error)
	ListOrders(ctx context.Context, f postgres.Filter) ([]*order.Order, *uuid.UUID, error)
	Cancel(ctx context.Context, id uuid.UUID, actor, reason string) (bool, error)
	RequestCancel(ctx context.Context, id uuid.UUID, actor, signal string) (order.Status, error)
	CancelRequestOf(ctx context.Context, id uuid.UUID) (*postgres.CancelRequest, error)
	// OutputCapOf is the output cap the worker recorded for an order
	// whose stream it cut (stage0's truncation warning).
	OutputCapOf(ctx context.Context, id uuid.UUID) (limit int64, ok bool, err error)
	Hosts(ctx context.Context, names ...string) ([]postgres.HostRow, error)
	ForgetHost(ctx context.Context, host, abandonedBy string) (found bool, active int, abandoned []postgres.Abandoned, err error)
	QueueDepth(ctx context.Context, host string) (int, error)
	QueueDepths(ctx context.Context) (map[string]int, error)
	CurrentOrders(ctx context.Context, names ...string) (map[string]postgres.Running, error)
	// StartMaintenance, EndMaintenance and HostsInMaintenance keep the
	// hosts an admin put in maintenance (maintenance.go).
	StartMaintenance(ctx context.Context, host string, reason *string, by string) (postgres.Maintenance, error)
	EndMaintenance(ctx context.Context, host, by string) (postgres.Maintenance, bool, error)
	HostsInMaintenance(ctx context.Context) (map[string]postgres.Maintenance, error)
	RecordRejection(ctx context.Context, r postgres.Rejection) error
	Ping(ctx context.Context) error
}

// Authenticator turns an Authorization header into a principal.
type Authenticator interface {
	Authenticate(header string) (auth.Principal, error)
}

// Settings are the parts of the config the API reads per request; the
// function returning them is called each time, so a reload applies at once.
type Settings struct {
	MaxBodyBytes int64
	MaxWait      time.Duration
	ACL          *netacl.ACL
	// RatePerIP and RatePerPrincipal are requests per minute; 0 is off.
	RatePerIP        int
	RatePerPrincipal int
	// MetricsPublic serves /metrics without authentication (for a
	// Prometheus that scrapes from a trusted network).
	MetricsPublic bool
	// RateShared counts the rate limits across replicas (SharedLimits).
	RateShared bool
	// MaxStreams is how many event streams and waits one principal may
	// hold open at once (HoldStream); 0 is no limit.
	MaxStreams int
}

// Deps are the Server's collaborators.
type Deps struct {
	Store    Store
	Queue    *queue.Queue
	Intake   *intake.Service
	Auth     func() Authenticator
	Settings func() Settings
	Status   func() map[string]any // extra fields for /v1/status and drift for /readyz
	Logger   *slog.Logger
	Version  string
	// Reload loads the config again (POST /v1/admin/reload); by is the
	// principal asking, confirm the request's ?confirm= value. An error
	// means nothing changed.
	Reload func(ctx context.Context, by, confirm string) (config.ReloadResult, error)
	// Metrics, when set, is served on /metrics and records API latency.
	Metrics *metrics.Metrics
	// SharedLimits, when set and limits.rate_shared is on, counts rate
	// limits across every API replica.
	SharedLimits RateCounter
	// Runbooks, when set, serves /v1/runbooks (runbooks.go).
	Runbooks *RunbookDeps
	// Actions, when set, serves /v1/actions (actions.go).
	Actions *ActionDeps
	// Presence, when set, is this process's presence, which the compat
	// surfaces bind their waiting clients' orders to (BindWaiter).
	Presence *Presence
	// PostgresDown, when set, says why PostgreSQL is down when this
	// process knows ("" when it does not): serve's managed cluster that
	// fails to start again. /readyz gives it as reasons.postgres.
	PostgresDown func() string
}

// Server serves the API.
type Server struct {
	Deps
	logger *slog.Logger

	ipLimits, principalLimits *rateLimiter
	sharedWarned              atomic.Int64 // last warning about SharedLimits, unix ns
	// auditLimits bounds the refusals an address has recorded
	// (recordRefusal); auditWarned is the last warning that it did.
	auditLimits *rateLimiter
	auditWarned atomic.Int64

	compat []CompatSurface // drop-in surfaces (MountCompat)

	events  eventHub     // the ?wait requests' shared event subscription
	streams streamCounts // open streams and waits per principal (HoldStream)
	// taken remembers, by order id (submissionID), the NATS submissions
	// this replica counted against their principal's rate limit or
	// refused with a row in rejections. The intake consumer's state is in
	// memory on a single nats-server, so a restart of the server loses it
	// and the submissions it held come again as first deliveries: without
	// this, one counted here was counted a second time, and one whose
	// refusal was recorded but not acknowledged kept that row beside the
	// new decision. Remembered, such a submission is taken up as a
	// redelivery (delivery.counted). Another replica pinned after the
	// restart does not know it. recent.Kept is well above what the intake
	// holds at once.
	taken recent.IDs
	// unavailable thins the log lines of 503 answers.
	unavailable unavailableLog
	// routes are the latency metric's route labels (measure).
	routes routeLabels
	// registryMisses thins those of hosts listed without their
	// heartbeats (hosts.go).
	registryMisses registryMisses
}

// New returns a Server.
func New(d Deps) *Server {
	s := &Server{Deps: d, logger: d.Logger,
		ipLimits: newRateLimiter(time.Now), principalLimits: newRateLimiter(time.Now), auditLimits: newRateLimiter(time.Now)}
	if d.Queue != nil {
		// A worker sharing the Queue (serve's) wakes this API's waiters
		// itself, not through the bus (queue.HearOwnEnds).
		d.Queue.HearOwnEnds(&s.events)
	}
	return s
}

// principalKey carries the authenticated principal in a request context,
// as an authedPrincipal.
type principalKey struct{}

// authedPrincipal is a request's principal with the Authorization header
// that authenticated it, which a wait checks again as it goes
// (credentialGone). A runbook's delegated token has none: its run's end
// is what revokes it.
type authedPrincipal struct {
	auth.Principal
	credential string
}

func principalOf(r *http.Request) auth.Principal { return principalIn(r.Context()) }

func principalIn(ctx context.Context) auth.Principal {
	a, _ := ctx.Value(principalKey{}).(authedPrincipal)
	return a.Principal
}

// credentialGone reports whether the credential that authenticated ctx's
// request no longer does, or no longer as the same principal: a token
// removed by a reload, a JWT past its expiry. A wait (?wait, Prefer:
// wait) asks it as a live stream does (mayStillRead), so that a revoked
// credential does not get an order's output up to http.max_wait later.
// A compat surface's request, which the API did not authenticate, asks
// the surface's own check (WithCredentialCheck); one with neither (a
// runbook's delegated token) is never gone.
func (s *Server) credentialGone(ctx context.Context) bool {
	a, _ := ctx.Value(principalKey{}).(authedPrincipal)
	if a.credential == "" {
		gone, _ := ctx.Value(credentialCheckKey{}).(func() bool)
		return gone != nil && gone()
	}
	p, err := s.Auth().Authenticate(a.credential)
	return err != nil || p.Name != a.Name
}

// credentialCheckKey carries a compat surface's check of its request's
// credential (WithCredentialCheck).
type credentialCheckKey struct{}

// WithCredentialCheck returns ctx with gone, a compat surface's own check
// that what admitted its request no longer does: a Vigrid token removed
// by a reload, a stage0 JWT past its exp or signed with a secret no
// longer configured, an httpexec client whose address acl.allow no longer
// admits. A wait under ctx (SubmitOrder, FollowOrder) asks it every
// credentialRecheck, as it checks a native request's credential, and
// ends with an error CredentialGone reads, which the surface answers in
// its original's own shape.
func WithCredentialCheck(ctx context.Context, gone func() bool) context.Context {
	return context.WithValue(ctx, credentialCheckKey{}, gone)
}

// errCredentialGoneCause marks errCredentialGone's errors for
// CredentialGone.
var errCredentialGoneCause = errors.New("the credential stopped being accepted")

// CredentialGone reports whether err ended a wait because its request's
// credential stopped being accepted, and names the order it had
// submitted (accepted: it goes on).
func CredentialGone(err error) (uuid.UUID, bool) {
	var e *order.Error
	if !errors.Is(err, errCredentialGoneCause) || !errors.As(err, &e) {
		return uuid.Nil, false
	}
	id, ok := e.Details["order_id"].(uuid.UUID)
	return id, ok
}

// errCredentialGone is a wait's answer when its credential stopped
// working meanwhile: the order, accepted before, goes on, and its id is
// said so that nothing is lost, but nothing more is read for a
// credential that is no longer accepted.
// key names id in details: order_id, or batch_id for a fan-out.
func errCredentialGone(key string, id uuid.UUID) error {
	return &order.Error{Code: order.CodeUnauthenticated,
		Message: "the credential stopped being accepted while the request waited (removed by a reload, or expired): what it submitted was accepted and goes on; read it with a valid credential",
		Details: map[string]any{key: id}, Err: errCredentialGoneCause}
}

type clientIPKey struct{}

func clientIPOf(r *http.Request) string {
	s, _ := r.Context().Value(clientIPKey{}).(string)
	return s
}
