// Package metrics holds orderly's Prometheus metrics (DESIGN §9): one
// registry per process, with the collectors every component records into.
package metrics

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/orderly-run/orderly/internal/order"
)

// Metrics is the set of collectors. A nil *Metrics records nothing, so
// components need no checks.
type Metrics struct {
	registry     *prometheus.Registry
	submitted    *prometheus.CounterVec
	finished     *prometheus.CounterVec
	execDuration *prometheus.HistogramVec
	rejections   *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec
	unavailable  *prometheus.CounterVec
	leaseFailed  *prometheus.CounterVec
	jwksRefresh  *prometheus.CounterVec
	restores     prometheus.Counter
	restoreGuard *prometheus.GaugeVec

	hostsMu sync.Mutex
	hosts   map[string]bool // the host label values in use (hostLabel)
}

// maxHostLabels bounds the host label values of the per-host series. A
// client chooses the host of an order, and the API counts the queued
// orders it cancels or expires: without a bound, orders to made-up hosts
// would add series kept for the process's life. Past it, hosts not yet
// seen are counted under "other".
const maxHostLabels = 10000

// hostLabel is host as a label value (see maxHostLabels).
func (m *Metrics) hostLabel(host string) string {
	m.hostsMu.Lock()
	defer m.hostsMu.Unlock()
	if !m.hosts[host] {
		if len(m.hosts) >= maxHostLabels {
			return "other"
		}
		m.hosts[host] = true
	}
	return host
}

// New returns a registry with the Go runtime and process collectors and
// orderly's own.
func New() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		hosts:    map[string]bool{},
		submitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderly_orders_submitted_total", Help: "Orders accepted, by source (rest, nats, runbook, vigrid, httpexec, stage0).",
		}, []string{"source"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderly_orders_finished_total", Help: "Orders that reached a terminal status, by host and status: on a worker, or in the API for a queued order it canceled or expired.",
		}, []string{"host", "status"}),
		execDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "orderly_exec_duration_seconds", Help: "Run time of executed orders, by host.",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30, 60, 300, 1800},
		}, []string{"host"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderly_rejections_total", Help: "Refused requests and submissions, by error code (unauthenticated, forbidden, invalid_request, rate_limited, …).",
		}, []string{"code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "orderly_http_request_duration_seconds", Help: "API latency by route pattern, method and status.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, 1, 5, 30},
		}, []string{"route", "method", "status"}),
		unavailable: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderly_http_unavailable_total", Help: "API answers 503 by route: an order recorded but not queued (its publish failed), a dependency unreachable, or the Vigrid surface's tamper check (compat.vigrid.integrity_check: the config file differs from the loaded one; route unmatched).",
		}, []string{"route"}),
		leaseFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderly_worker_lease_failures_total", Help: "A worker's heartbeats and lease renewals that NATS did not accept, by host and step (heartbeat, renew).",
		}, []string{"host", "step"}),
		jwksRefresh: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderly_jwks_refreshes_total", Help: "Reads of the JWT key set (auth.jwt.jwks) after the first, by result (ok, failed); a failed one keeps the keys read before.",
		}, []string{"result"}),
		restores: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderly_postgres_restores_total", Help: "Times this API process found PostgreSQL behind the publish generation kept in NATS (restored from a backup) and settled the orders it held as not yet published instead of publishing them again.",
		}),
		restoreGuard: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "orderly_worker_restore_guard", Help: "1 while this worker reads and writes its host's claim mark in NATS (the check that keeps an order a restored database holds queued from running twice), 0 while NATS refuses or does not answer it; by host. Unset until its first tenure reads the mark.",
		}, []string{"host"}),
	}
	m.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.submitted, m.finished, m.execDuration, m.rejections, m.httpDuration, m.unavailable, m.leaseFailed, m.jwksRefresh,
		m.restores, m.restoreGuard)
	return m
}

// Handler serves the registry in the Prometheus text format. A gauge that
// cannot be read (PostgreSQL down) is left out of the scrape instead of
// failing it: orderly_dependency_up then says why, and the alerts that
// watch it can fire.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// JWKSRefreshed counts a read of the JWT key set after the first: err is
// nil when it was read, else the keys read before stay in use.
func (m *Metrics) JWKSRefreshed(err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.jwksRefresh.WithLabelValues("failed").Inc()
	} else {
		m.jwksRefresh.WithLabelValues("ok").Inc()
	}
}

// RestoreDetected counts a restore of PostgreSQL the API found
// (intake/restore.go).
func (m *Metrics) RestoreDetected() {
	if m != nil {
		m.restores.Inc()
	}
}

// RestoreGuard records whether host's worker reads and writes its claim
// mark (worker/replay.go).
func (m *Metrics) RestoreGuard(host string, on bool) {
	if m == nil {
		return
	}
	v := 0.0
	if on {
		v = 1
	}
	m.restoreGuard.WithLabelValues(m.hostLabel(host)).Set(v)
}

// Submitted counts an accepted order.
func (m *Metrics) Submitted(source string) {
	if m != nil {
		m.submitted.WithLabelValues(source).Inc()
	}
}

// Finished records an order's end: on a worker, or in the API for a queued
// order canceled or expired there; ran is how long its process ran,
// negative when nothing was executed.
func (m *Metrics) Finished(host string, st order.Status, ran time.Duration) {
	if m == nil {
		return
	}
	host = m.hostLabel(host)
	m.finished.WithLabelValues(host, string(st)).Inc()
	if ran >= 0 {
		m.execDuration.WithLabelValues(host).Observe(ran.Seconds())
	}
}

// WorkerHost starts host's finished-order counters at 0 for every terminal
// status. A series that first appears at 1 shows no increase, so an alert
// on the first interrupted order of a fresh worker (usually the one that
// took over) would never fire.
func (m *Metrics) WorkerHost(host string) {
	if m == nil {
		return
	}
	host = m.hostLabel(host)
	for _, st := range order.Statuses {
		if st.Terminal() {
			m.finished.WithLabelValues(host, string(st))
		}
	}
	for _, step := range []string{LeaseHeartbeat, LeaseRenew} {
		m.leaseFailed.WithLabelValues(host, step)
	}
}

// The steps of a worker's tenure that LeaseFailed counts.
const (
	LeaseHeartbeat = "heartbeat" // the host's entry in the hosts bucket (online, current order)
	LeaseRenew     = "renew"     // the lease that makes it the host's only worker
)

// LeaseFailed counts a heartbeat or a lease renewal of host's worker that
// failed for another reason than a rival holding the lease (NATS
// unreachable, its disk full). A worker whose renewals keep failing holds
// the host only until its lease expires.
func (m *Metrics) LeaseFailed(host, step string) {
	if m != nil {
		m.leaseFailed.WithLabelValues(m.hostLabel(host), step).Inc()
	}
}

// Rejected counts a refusal by its error code.
func (m *Metrics) Rejected(code order.Code) {
	if m != nil {
		m.rejections.WithLabelValues(string(code)).Inc()
	}
}

// Request records one API request.
func (m *Metrics) Request(route, method string, status int, d time.Duration) {
	if m != nil {
		m.httpDuration.WithLabelValues(route, methodClass(method), statusClass(status)).Observe(d.Seconds())
		if status == http.StatusServiceUnavailable {
			// Counted apart from other 5xx: the publish-failure alert.
			m.unavailable.WithLabelValues(route).Inc()
		}
	}
}

// methodClass is method as a label: a client may send any token as its
// method, and each would be a new series kept for ever.
func methodClass(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return method
	}
	return "other"
}

func statusClass(code int) string {
	switch {
	case code >= 500:
		return "5xx"
	case code >= 400:
		return "4xx"
	case code >= 300:
		return "3xx"
	}
	return "2xx"
}

// WatchQueues reports orderly_queue_depth per host at scrape time from
// depths (queued orders per host), so the gauge is never stale.
func (m *Metrics) WatchQueues(depths func(context.Context) (map[string]int, error)) {
	if m != nil {
		m.registry.MustRegister(&queueCollector{depths: depths})
	}
}

var queueDesc = prometheus.NewDesc("orderly_queue_depth", "Orders queued per host, read from PostgreSQL at scrape time.", []string{"host"}, nil)

type queueCollector struct {
	depths func(context.Context) (map[string]int, error)
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- queueDesc }

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	d, err := c.depths(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(queueDesc, err)
		return
	}
	for host, n := range d {
		ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(n), host)
	}
}

// foreignGenerationsOpts is orderly_publish_generation_foreign_total's.
var foreignGenerationsOpts = prometheus.CounterOpts{
	Name: "orderly_publish_generation_foreign_total",
	Help: "Reads of the publish generation in NATS by this API process that found one signed with another key than its own: another API replica runs with another NATS seed, and the two write over each other's generation (docs/deploy.md, \"One NATS seed for every API replica\").",
}

// WatchForeignGenerations reports orderly_publish_generation_foreign_total
// at scrape time from count (queue.Queue.ForeignGenerations's).
func (m *Metrics) WatchForeignGenerations(count func() uint64) {
	if m != nil {
		m.registry.MustRegister(prometheus.NewCounterFunc(foreignGenerationsOpts, func() float64 { return float64(count()) }))
	}
}

// apiCertificateExpiryOpts is orderly_api_certificate_expiry_timestamp_seconds's.
var apiCertificateExpiryOpts = prometheus.GaugeOpts{
	Name: "orderly_api_certificate_expiry_timestamp_seconds",
	Help: "The end (not after, Unix time) of the HTTPS certificate this API process serves to new connections (http.tls_cert), renewed by a reload or on disk without a restart; absent without TLS. Alert on it minus time().",
}

// WatchAPICertificate reports
// orderly_api_certificate_expiry_timestamp_seconds at scrape time from
// notAfter, the served certificate's end. A timestamp, not days left:
// Prometheus's convention (blackbox's probe_ssl_earliest_cert_expiry,
// cert-manager's expiration_timestamp_seconds), which a rule turns into
// the time left with `- time()`.
func (m *Metrics) WatchAPICertificate(notAfter func() time.Time) {
	if m != nil {
		m.registry.MustRegister(prometheus.NewGaugeFunc(apiCertificateExpiryOpts, func() float64 { return float64(notAfter().Unix()) }))
	}
}
